"""The RPT build settings, each declared once: `RPTBuildConfig`.

Every setting that decides which rows `rl data rpt` / `rl data rlp` / `rl train` (from a `corpus`)
build is one field of `RPTBuildConfig`, with its default and its help text in the field's
metadata. Both user-facing forms are derived from it, so a setting cannot drift between them:

* the recipe field `rpt_<name>` of `rl.train.config.ScriptArguments` (`recipe_fields()`: a dataclass
  that ScriptArguments inherits, help text included, read by TRL's parser);
* the `rl data rpt` flag `--<name-with-dashes>` (`add_build_flags`, read back by `config_from_args`).

A field's metadata: `help`; `flag` (None: no CLI flag; a string: another flag name, e.g.
`--prompt-template-file`, which reads the file); `recipe` (False: no recipe field, the run derives
it); `type` (the argparse type: one of rl/runtime/values.py's checked numbers); `choices`.
`corpus` and `proxy_model` are the run's inputs, not settings: the recipe and the CLI declare them
with their own defaults (the recipe's proxy defaults to the policy).
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field

from rewards.rpt import FORMATS
from rl.errors import UserError
from rl.runtime.values import FINITE, POSITIVE_INT, Number
from rl.data.fingerprint import corpus_fingerprint, model_fingerprint

DEFAULT_RPT_PROMPT = (
    'Complete the text under "### Context" by predicting its next token.\n'
    "Reason step by step about what most plausibly comes next: list a few candidate tokens and "
    "pick the most probable one.\n"
    "Put only the predicted token in \\boxed{}, copied exactly as it would appear in the text. "
    "A token may start with a space, as in \\boxed{ para}; never wrap it in \\text{}.\n\n"
    "### Context\n{context}"
)
SELECT_BY = ("entropy", "surprisal", "surprise", "random")
#: Row formats the builder writes: RPT's two, and `rlp` (a thought prompt, rewards/rlp.py; the
#: positions are chosen exactly as for RPT: the proxy's entropy filter, sampled per document).
BUILD_FORMATS = FORMATS + ("rlp",)
# Raised when the same settings and inputs would now give other rows, so saved data built before is
# rebuilt instead of reused. 2: the proxy reads BOS first where the tokenizer adds one, with the
# model's real (scaled / soft-capped) logits, in eval mode. 3: windows are batched by length within
# blocks of `block_documents` (other batches, so last-bit-different entropies); the histogram summary.
BUILDER_VERSION = 3


def setting(default, help: str, *, flag: str | None | bool = True, recipe: bool = True, type=None, choices=None):
    """One RPT setting: its default and help text, and how it appears on the CLI and in recipes."""
    return field(default=default, metadata={"help": help, "flag": flag, "recipe": recipe, "type": type,
                                            "choices": choices})


@dataclass
class RPTBuildConfig:
    """Everything that decides which RPT rows a corpus yields (saved next to the dataset)."""

    corpus: str
    proxy_model: str
    entropy: str = setting("topk", "Entropy that picks positions: `topk`, of the top-k probabilities renormalised "
                           "to sum to 1 (the paper: top-16), or `full`, of the whole softmax.", choices=("topk", "full"))
    top_k: int = setting(16, "k of the `topk` entropy (the paper: 16).", type=POSITIVE_INT)
    min_entropy: float = setting(0.5, "Keep positions whose proxy next-token entropy (nats) is at least this "
                                 "(select_by entropy).", type=FINITE)
    select_by: str = setting(
        "entropy", "Which proxy score picks positions: `entropy` (the paper; >= min_entropy), `surprisal` (-log p of "
        "the true token) or `surprise` (Titans: ||softmax(z) - onehot(y)||_2, the cross-entropy's gradient norm, in "
        "[0, 1.414]) >= min_surprise, or `random` (every position a candidate: the control). The same context filters "
        "and per-document cap apply in every case. Measured (bench/rpt_select_by.py: demo recipe, 3 seeds x 30 steps): "
        "held-out expected accuracy gain +1.11 pts [95 pct t-interval -0.06, +2.28] with entropy >= 1.0, +1.29 "
        "[-0.07, +2.64] with surprisal >= 1.0, +0.43 [-2.42, +3.28] random; no criterion is shown better at this scale.",
        choices=SELECT_BY)
    min_surprise: float = setting(2.0, "With select_by surprisal or surprise: keep positions whose score is at least "
                                  "this.", type=FINITE)
    max_per_doc: int = setting(8, "Sample at most this many positions per document.", type=POSITIVE_INT)
    continuation_tokens: int = setting(8, "Ground-truth tokens kept after each position (the prefix-match targets).",
                                       type=POSITIVE_INT)
    max_context_tokens: int = setting(512, "Long contexts keep only their most recent this-many tokens.",
                                      type=POSITIVE_INT)
    min_context_tokens: int = setting(16, "Positions with fewer preceding tokens than this are not used.",
                                      type=POSITIVE_INT)
    window_tokens: int = setting(1024, "Proxy forward window in tokens (BOS included); windows overlap by half.",
                                 type=Number(int, 2))
    proxy_batch_size: int = setting(4, "Windows per proxy forward pass (windows of a block sorted by length).",
                                    type=POSITIVE_INT)
    block_documents: int = setting(64, "Documents per block: the proxy's batches are formed within a block; shards "
                                   "take whole blocks; progress is saved after each (a killed build resumes there).",
                                   type=POSITIVE_INT)
    max_documents: typing.Optional[int] = setting(None, "Read at most this many documents of the corpus (unset: all).",
                                                  type=POSITIVE_INT)
    prompt_template: str = setting(
        DEFAULT_RPT_PROMPT, "Instruction of the reasoning format with a `{context}` placeholder (RPT paper template "
        "v0 in spirit); RLP rows use RLP's own thought prompt unless this is changed. The CLI reads it from a file.",
        flag="--prompt-template-file")
    seed: int = setting(0, "Seed for sampling positions.", type=int)
    chat: str = setting("auto", "Wrap prompts as chat messages (reasoning format): auto = when the tokenizer has a "
                        "chat template. A run decides it from the policy's tokenizer.", recipe=False,
                        choices=("auto", "yes", "no"))
    format: str = setting(
        "reasoning", "How prompts are made. `reasoning` (the paper's): an instruction around the context, the model "
        "reasons and answers in \\boxed{} (reward `rpt`), for reasoning/instruction-following models. `completion`: "
        "the raw context is the prompt and the completion itself is the guess (reward `rpt_completion`), for base and "
        "small chat models: SmolLM2-135M-Instruct is right at 41 pct of high-entropy positions this way and 6 pct under "
        "the reasoning instruction. `rlp`: a thought prompt for the RLP information-gain reward `rlp` (`rl data rlp`).",
        choices=("reasoning", "completion"))
    text_field: str = setting("text", "Corpus field/column holding the text (.jsonl, .parquet, HF dataset dir), e.g. "
                              "`content`.")
    id_field: typing.Optional[str] = setting(None, "Corpus field/column used as the document id (default: file and "
                                             "line/row number).")
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        # RLP rows ask for the thought with RLP's own prompt unless a template was chosen
        if self.format == "rlp" and self.prompt_template == DEFAULT_RPT_PROMPT:
            self.prompt_template = ""

    def fingerprint(self) -> dict:
        """What decides the rows, as saved in rpt_build.json (for reuse checks): the settings plus
        `inputs`, the corpus and proxy-model files they were built from (size + mtime_ns per file,
        rl/data/fingerprint.py), so rewritten corpus files never lead to stale rows being reused."""
        settings = json.loads(json.dumps(dataclasses.asdict(self), default=str))
        if self.select_by == "entropy":  # data built before select_by existed stays reusable
            settings.pop("select_by")
            settings.pop("min_surprise")
        settings["builder"] = BUILDER_VERSION
        settings["inputs"] = {"corpus": corpus_fingerprint(self.corpus),
                              "proxy_model": model_fingerprint(self.proxy_model)}
        return settings

    def validate(self) -> None:
        if self.entropy not in ("topk", "full"):
            raise UserError(f"entropy: expected `topk` or `full`, got {self.entropy!r}")
        if self.select_by not in SELECT_BY:
            raise UserError(f"select_by: expected one of {', '.join(SELECT_BY)}, got {self.select_by!r}")
        positive = ("top_k", "max_per_doc", "continuation_tokens", "max_context_tokens", "window_tokens",
                    "proxy_batch_size", "block_documents")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise UserError(f"{name}: must be at least 1, got {getattr(self, name)}")
        if self.window_tokens < 2:
            raise UserError("window_tokens: must be at least 2")
        if self.min_context_tokens < 1:
            raise UserError(f"min_context_tokens: must be at least 1, got {self.min_context_tokens}")
        if self.format not in BUILD_FORMATS:
            raise UserError(f"format: expected one of {', '.join(BUILD_FORMATS)}, got {self.format!r}")
        if self.format == "reasoning" and "{context}" not in self.prompt_template:
            raise UserError("prompt_template: must contain the placeholder {context}")
        if self.chat not in ("auto", "yes", "no"):
            raise UserError(f"chat: expected auto, yes or no, got {self.chat!r}")
        if self.max_documents is not None and int(self.max_documents) < 1:
            raise UserError(f"max_documents: must be at least 1 (or unset for all), got {self.max_documents}")
        if not str(self.text_field or "").strip():
            raise UserError("text_field: must name the field/column holding the text (default `text`)")


def settings() -> list[dataclasses.Field]:
    """The settings of RPTBuildConfig (every field declared with `setting`), in declaration order."""
    return [f for f in dataclasses.fields(RPTBuildConfig) if "help" in f.metadata]


def recipe_name(name: str) -> str:
    return f"rpt_{name}"


def flag_name(f: dataclasses.Field) -> str | None:
    flag = f.metadata["flag"]
    if flag is False or flag is None:
        return None
    return flag if isinstance(flag, str) else "--" + f.name.replace("_", "-")


def recipe_fields():
    """A dataclass of the recipe fields `rpt_<name>` (defaults and help from RPTBuildConfig), for
    rl.train.config.ScriptArguments to inherit. Only `help` goes into their metadata: TRL's parser
    passes a field's metadata on to argparse."""
    hints = typing.get_type_hints(RPTBuildConfig)
    spec = [(recipe_name(f.name), hints[f.name], field(default=f.default, metadata={"help": f.metadata["help"]}))
            for f in settings() if f.metadata["recipe"]]
    return dataclasses.make_dataclass("RPTRecipeFields", spec, namespace={
        "__doc__": "The `rpt_*` recipe fields, derived from rl.data.settings.RPTBuildConfig."})


def config_from_recipe(script_args, **fixed) -> RPTBuildConfig:
    """RPTBuildConfig from a recipe's `rpt_*` fields; `fixed`: the inputs and the derived settings (corpus,
    proxy_model, chat)."""
    values = {f.name: getattr(script_args, recipe_name(f.name)) for f in settings() if f.metadata["recipe"]}
    return RPTBuildConfig(**{**values, **fixed})


def add_build_flags(parser, skip: tuple[str, ...] = ()) -> None:
    """Add one flag per setting (`--<name>`, default and help from RPTBuildConfig) to an argparse parser."""
    hints = typing.get_type_hints(RPTBuildConfig)
    for f in settings():
        flag = flag_name(f)
        if flag is None or f.name in skip:
            continue
        kind = f.metadata["type"]
        if kind is None and hints[f.name] in (int, float):
            kind = hints[f.name]
        kwargs = {"dest": f.name, "help": f.metadata["help"].replace("%", "%%")}
        if f.metadata["choices"]:
            kwargs["choices"] = list(f.metadata["choices"])
        if kind is not None:
            kwargs["type"] = kind
        if flag.endswith("-file"):  # read by config_from_args; the default is the built-in text
            kwargs.update(default=None, metavar="FILE", help=kwargs["help"] + " (default: the built-in text)")
        else:
            kwargs["default"] = f.default
        parser.add_argument(flag, **kwargs)


def config_from_args(args, **fixed) -> RPTBuildConfig:
    """RPTBuildConfig from the flags `add_build_flags` added (files read here); `fixed` overrides."""
    from pathlib import Path

    values = {}
    for f in settings():
        flag = flag_name(f)
        if flag is None or not hasattr(args, f.name):
            continue
        value = getattr(args, f.name)
        if flag.endswith("-file"):
            if value is None:
                continue
            try:
                value = Path(value).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise UserError(f"{flag} {value}: cannot read it ({exc.__class__.__name__})") from None
        values[f.name] = value
    return RPTBuildConfig(**{**values, **fixed})
