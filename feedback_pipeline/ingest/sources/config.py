"""`landing/sources.yaml`: pin a folder to a format and set its mapping options.

    default:                       # every folder unless overridden
      feedback:
        thumbs: [user-feedback, user_feedback, thumbs]    # score names / feedback keys
        escalation: [escalation]                          # categorical: value = the reason
        user_rewrote: [user_rewrote, rewrite]
    folders:
      otel/refunds:                # path under landing/, this folder and below
        format: otlp               # otlp | phoenix | langfuse | langsmith | contract
        agent_id: refunds          # overrides gen_ai.agent.name / service.name

Only the options; reading and mapping are in the format modules and `assemble.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_FEEDBACK: dict[str, tuple[str, ...]] = {
    "thumbs": ("user-feedback", "user_feedback", "thumbs", "thumb", "user_rating"),
    "escalation": ("escalation", "escalated", "escalation_reason"),
    "user_rewrote": ("user_rewrote", "user-rewrote", "rewrite", "rephrased"),
}
FORMATS = ("contract", "otlp", "phoenix", "langfuse", "langsmith")


class ConfigError(ValueError):
    """sources.yaml cannot be used; the message says what to fix."""


@dataclass(frozen=True)
class FolderOptions:
    format: str | None = None
    agent_id: str | None = None
    feedback: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_FEEDBACK))


@dataclass(frozen=True)
class SourcesConfig:
    default: FolderOptions = field(default_factory=FolderOptions)
    folders: dict[str, FolderOptions] = field(default_factory=dict)

    def for_file(self, name: str) -> FolderOptions:
        """The options of the deepest configured folder holding `name` (a path under landing/)."""
        best, depth = self.default, -1
        for folder, options in self.folders.items():
            prefix = folder.strip("/")
            if (name.startswith(prefix + "/") or not prefix) and prefix.count("/") + bool(prefix) > depth:
                best, depth = options, prefix.count("/") + bool(prefix)
        return best


def _options(raw: dict, base: FolderOptions, where: str) -> FolderOptions:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(raw).__name__}")
    fmt = raw.get("format", base.format)
    if fmt is not None and fmt not in FORMATS:
        raise ConfigError(f"{where}.format is {fmt!r}; expected one of {', '.join(FORMATS)}")
    feedback = dict(base.feedback)
    for signal, names in (raw.get("feedback") or {}).items():
        if signal not in DEFAULT_FEEDBACK:
            raise ConfigError(f"{where}.feedback.{signal}: unknown signal; expected {', '.join(DEFAULT_FEEDBACK)}")
        feedback[signal] = tuple([names] if isinstance(names, str) else names or ())
    return FolderOptions(format=fmt, agent_id=raw.get("agent_id", base.agent_id), feedback=feedback)


def load_config(landing_dir: Path) -> SourcesConfig:
    """The folder options from `landing/sources.yaml` (defaults when there is none)."""
    path = landing_dir / "sources.yaml"
    if not path.exists():
        return SourcesConfig()
    import yaml

    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"landing/sources.yaml is not valid YAML: {exc}") from exc
    default = _options(raw.get("default") or {}, FolderOptions(), "default")
    folders = {str(k).strip("/"): _options(v or {}, FolderOptions(feedback=default.feedback,
                                                                    agent_id=default.agent_id), f"folders.{k}")
               for k, v in (raw.get("folders") or {}).items()}
    return SourcesConfig(default=default, folders=folders)
