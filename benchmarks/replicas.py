"""Two replicas behind nginx (docs/nginx.conf), end to end in Chromium.

Starts two app servers in server mode with one shared cookie secret, and nginx
with docs/nginx.conf (its port and replica ports rewritten into a temp copy).
Then N students (each a fresh Chromium context, so a fresh cookie) open the
heatmap through nginx, see their own sentence drawn, and press Run with a new
text.  Which replica served a request is read from the nginx access log
(each line carries the student's route key and the upstream address).  Checks: every student's
view is drawn, both replicas get students, and every request of a student (page,
assets, websocket, the Run) reaches one replica (sticky sessions).  Also reports the
bytes a first visit downloads through nginx (gzip on).

Needs nginx (`apt-get install nginx`) and Debian's Chromium.
Usage:  .venv/bin/python benchmarks/replicas.py [--students 8]
Results go to benchmarks/replicas_results.md.
"""
from __future__ import annotations

import argparse
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))
from browser import CHROMIUM_ARGS, chromium_path, heatmap_frame, wait_for_app  # noqa: E402
from load import Server, _free_port, sentence  # noqa: E402


def start_nginx(ports: list[int], listen: int, workdir: Path) -> subprocess.Popen:
    conf = (ROOT / "docs" / "nginx.conf").read_text()
    conf = conf.replace("listen 80;", f"listen 127.0.0.1:{listen};")
    servers = "\n".join(f"        server 127.0.0.1:{p} max_fails=3 fail_timeout=10s;" for p in ports)
    conf = re.sub(r"(upstream attention_explorer \{\n(?:.*\n)*?)((?:\s*server 127\.0\.0\.1:85\d\d[^\n]*\n)+)",
                  lambda m: m.group(1) + servers + "\n", conf, count=1)
    conf = conf.replace("worker_processes auto;", f"worker_processes 1;\npid {workdir}/nginx.pid;\n"
                        f"error_log {workdir}/error.log;\ndaemon off;")
    conf = conf.replace("http {", "http {\n    log_format route '$viz_route $upstream_addr $request_uri';\n"
                        f"    access_log {workdir}/access.log route;\n"
                        f"    client_body_temp_path {workdir}/body;\n    proxy_temp_path {workdir}/proxy;", 1)
    path = workdir / "nginx.conf"
    path.write_text(conf)
    check = subprocess.run(["nginx", "-t", "-c", str(path)], capture_output=True, text=True)
    if check.returncode:
        raise RuntimeError(check.stderr)
    return subprocess.Popen(["nginx", "-c", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


def replicas_of(workdir: Path, route: str, ports: list[int]) -> list[int]:
    """Every replica nginx sent this student's requests to (HTML, assets, websocket), from its access log."""
    used = []
    for line in (workdir / "access.log").read_text().splitlines():
        key, upstream, *_ = line.split(" ") + ["", ""]
        if key == route and upstream.rsplit(":", 1)[-1].isdigit():
            used.append(ports.index(int(upstream.rsplit(":", 1)[1])))
    return used


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--students", type=int, default=8)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "replicas_results.md"))
    args = ap.parse_args(argv)
    if not shutil.which("nginx") or chromium_path() is None:
        print("needs nginx and chromium (apt-get install nginx chromium)", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    secret = secrets.token_hex(32)
    env = {"VIZ_SERVER_MODE": "1", "STREAMLIT_SERVER_COOKIE_SECRET": secret}
    servers = [Server("app.py", env=env).start(), Server("app.py", env=env).start()]
    workdir = Path(tempfile.mkdtemp(prefix="replicas-"))
    listen = _free_port()
    ports = [int(s.url.rsplit(":", 1)[1]) for s in servers]
    nginx = start_nginx(ports, listen, workdir)
    url = f"http://127.0.0.1:{listen}"
    rows, problems = [], []
    try:
        time.sleep(1)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)
            for s in servers:  # the teacher's first visit to each replica loads its model
                page = browser.new_page()
                page.goto(f"{s.url}/")
                wait_for_app(page, timeout=180_000)
                page.close()
            for i in range(args.students):
                context = browser.new_context(viewport={"width": 1280, "height": 900})
                page = context.new_page()
                text, word = sentence(200 + i)
                start = time.perf_counter()
                page.goto(f"{url}/heatmap?text={quote(text)}")
                wait_for_app(page, timeout=180_000)
                frame = heatmap_frame(page)               # the canvas heatmap, drawn
                first_s = time.perf_counter() - start
                drawn = word in (frame.locator("#hm-desc").text_content() or "")
                kb = page.evaluate("performance.getEntriesByType('resource')"
                                   ".reduce((a, e) => a + e.transferSize, 0) / 1024")
                cookie = next((c["value"] for c in context.cookies() if c["name"] == "viz_route"), "")
                first = replicas_of(workdir, cookie, ports)
                # Press Run with a new text: the rerun must reach the same replica.
                new_text, new_word = sentence(300 + i)
                page.get_by_role("textbox", name="Text").fill(new_text)
                page.get_by_role("button", name="Run").click()
                wait_for_app(page, timeout=180_000)
                heatmap_frame(page).locator("#hm-desc", has_text=new_word).wait_for(timeout=60_000)
                context.close()
                time.sleep(0.5)  # nginx logs a websocket when it closes
                every = replicas_of(workdir, cookie, ports)
                replica = every[0] if every else -1
                rows.append((i, cookie[:8], replica, len(every), len(set(every)) == 1, drawn, first_s, kb))
                if not drawn:
                    problems.append(f"student {i}: view lacks '{word}'")
                if not first or len(set(every)) != 1 or len(every) <= len(first):
                    problems.append(f"student {i}: requests went to replicas {sorted(set(every))} "
                                    f"({len(first)} logged at the first visit, {len(every)} in all)")
            browser.close()
    finally:
        nginx.terminate()
        for s in servers:
            s.stop()
    used = {r[2] for r in rows}
    if len(used) < 2:
        problems.append(f"all {len(rows)} students landed on one replica")
    lines = [f"# Two replicas behind nginx ({time.strftime('%Y-%m-%d %H:%M')})", "",
             "docs/nginx.conf (ports rewritten), two `VIZ_SERVER_MODE=1` replicas with one cookie secret, "
             f"{args.students} students each in a fresh Chromium context.", "",
             "| student | viz_route cookie | replica | requests (page, assets, websocket, Run) | all on one replica "
             "| own sentence drawn | first visit s | KB downloaded |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {i} | {c} | {r} | {n} | {'yes' if one else 'NO'} | {'yes' if d else 'NO'} | {t:.1f} | {kb:.0f} |"
              for i, c, r, n, one, d, t, kb in rows]
    lines += ["", "Students per replica: " + ", ".join(
        f"replica {k}: {sum(r[2] == k for r in rows)}" for k in range(len(servers))) + ".",
              "KB downloaded: what a first visit transfers through nginx (gzip on), all assets included.", "",
              "Problems: " + ("; ".join(problems) if problems else "none") + "."]
    report = "\n".join(lines) + "\n"
    print(report)
    Path(args.out).write_text(report)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
