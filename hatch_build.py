"""Build hook: put the Streamlit app's files into the wheel (``viz/_app/``) for `attention-explorer app`.

``app.py``, ``pages/`` and ``.streamlit/config.toml`` stay at the top of the repository, where
``streamlit run app.py`` expects them.  A regular wheel carries copies under ``viz/_app/``
(viz/launch.py runs them); an editable install does not, so it never runs stale copies: it
runs the clone's own ``app.py``.
"""
from hatchling.builders.hooks.plugin.interface import BuildHookInterface

APP_FILES = {
    "app.py": "viz/_app/app.py",
    "pages": "viz/_app/pages",
    ".streamlit/config.toml": "viz/_app/.streamlit/config.toml",
}


class AppFilesHook(BuildHookInterface):
    def initialize(self, version: str, build_data: dict) -> None:
        if self.target_name == "wheel" and version == "standard":
            build_data["force_include"].update(APP_FILES)
