"""The agent's name for the one Settings object, which lives in :mod:`core.settings`.

Tools and evals sit below the agent and import ``core.settings`` directly; this re-export keeps
``agent.settings`` meaningful for readers of the agent (see STYLE.md).
"""

from core.settings import (
    ArxivSettings,
    EmbeddedServerSettings,
    LLMSettings,
    Settings,
    StoreSettings,
    load_settings,
)

__all__ = ["ArxivSettings", "EmbeddedServerSettings", "LLMSettings", "Settings",
           "StoreSettings", "load_settings"]
