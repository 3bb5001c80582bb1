"""`rl sft` data: SFT rows from a file (checked before any model loads) and CAFT's self-distilled set.

Self-distillation (CAFT stage 1): the base model answers each prompt of a prompt file itself
(greedy, left-padded batches, a progress bar); the answers are the heads' training rows, so the
heads learn the model's own distribution, not another writer's. The set is built once into
`<output_dir>/distilled` (a safe output: rl/runtime/outputs.py) and reused only when the prompts file,
model and settings are unchanged; with other settings the run stops rather than mix them.
"""

from __future__ import annotations

import json
from pathlib import Path

from rl.errors import UserError
from rl.runtime.outputs import check_output_dir, replace_dir

DISTILL_COMMAND = "rl sft (self-distilled set)"
ROWS = "rows.jsonl"
SETTINGS = "distill.json"


def read_prompts(path: str, field: str = "caft_prompts") -> list[str]:
    """Prompts from a .txt file (one per non-empty line) or a .jsonl file (a string `prompt` per row)."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{field}: {path} is not a file; give a .txt (one prompt per line) or .jsonl (`prompt`)")
    text = p.read_text(encoding="utf-8", errors="strict")
    if p.suffix == ".jsonl":
        prompts = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                raise UserError(f"{field}: {path} line {n} is not JSON") from None
            if not isinstance(row, dict) or not isinstance(row.get("prompt"), str) or not row["prompt"].strip():
                raise UserError(f"{field}: {path} line {n} needs a non-empty string `prompt`")
            prompts.append(row["prompt"])
    else:
        prompts = [line for line in text.splitlines() if line.strip()]
    if not prompts:
        raise UserError(f"{field}: {path} holds no prompts")
    return prompts


def load_rows(path: str, field: str = "dataset_path"):
    """SFT rows (a datasets.Dataset) with TRL's columns; one line naming `field` otherwise."""
    import datasets

    p = Path(path)
    if not p.exists():
        raise UserError(f"{field}: {path} does not exist")
    try:
        ds = datasets.load_from_disk(str(p)) if p.is_dir() else datasets.load_dataset(
            "json", data_files=str(p), split="train")
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file
        raise UserError(f"{field}: cannot read {path} as SFT rows ({str(exc).splitlines()[0][:200]})") from None
    if isinstance(ds, datasets.DatasetDict):
        ds = ds["train"] if "train" in ds else next(iter(ds.values()))
    cols = set(ds.column_names)
    if not ({"prompt", "completion"} <= cols or "messages" in cols or "text" in cols):
        raise UserError(f"{field}: {path} needs `prompt` + `completion`, `messages` or `text` columns, has "
                        f"{sorted(cols)}")
    if len(ds) == 0:
        raise UserError(f"{field}: {path} holds no rows")
    return ds


def split_rows(ds, eval_fraction: float, seed: int):
    """(train, held-out or None): a seeded split; held-out only when both sides keep a row."""
    if not 0 <= eval_fraction < 1:
        raise UserError(f"eval_fraction: must be in [0, 1), got {eval_fraction}")
    n_eval = int(round(len(ds) * eval_fraction))
    if n_eval == 0 or n_eval >= len(ds):
        return ds, None
    parts = ds.train_test_split(test_size=n_eval, seed=seed, shuffle=True)
    return parts["train"], parts["test"]


def distill_settings(prompts_path: str, model_name: str, max_new_tokens: int) -> dict:
    stat = Path(prompts_path).stat()
    return {"prompts": str(Path(prompts_path).resolve()), "prompts_size": stat.st_size,
            "prompts_mtime": int(stat.st_mtime), "model": str(model_name), "max_new_tokens": int(max_new_tokens),
            "decoding": "greedy"}


def reusable(directory: Path, settings: dict) -> bool:
    """True when `directory` holds a finished set built with `settings`; a set built otherwise stops the run."""
    path = directory / SETTINGS
    if not path.is_file():
        return False
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if old != settings:
        changed = sorted(k for k in settings if old.get(k) != settings[k])
        raise UserError(f"output_dir: {directory} holds a self-distilled set built with other {', '.join(changed)}; "
                        "use a new output_dir, or delete that directory to rebuild it")
    return (directory / ROWS).is_file()


def generate_answers(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int,
                     chat: bool | None = None) -> list[dict]:
    """The model's own greedy answers, batched (left padding), with a progress bar. Chat-template tokenizers
    get conversational rows (user turn -> assistant turn), others plain `prompt` + `completion` text
    (`chat` forces one or the other)."""
    import torch
    from tqdm.auto import tqdm

    chat = bool(getattr(tokenizer, "chat_template", None)) if chat is None else chat
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    rows = []
    try:
        model.eval()
        for start in tqdm(range(0, len(prompts), batch_size), desc="self-distilling", unit="batch"):
            batch = prompts[start:start + batch_size]
            texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                                   add_generation_prompt=True) if chat else p for p in batch]
            enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=not chat)
            enc = {k: v.to(model.device) for k, v in enc.items()}
            with torch.inference_mode():
                out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                     pad_token_id=tokenizer.pad_token_id)
            for prompt, ids in zip(batch, out[:, enc["input_ids"].shape[1]:]):
                answer = tokenizer.decode(ids, skip_special_tokens=True)
                rows.append({"prompt": [{"role": "user", "content": prompt}],
                             "completion": [{"role": "assistant", "content": answer}]} if chat
                            else {"prompt": prompt, "completion": answer})
    finally:
        tokenizer.padding_side = side
    return rows


def build_distilled(directory: Path, settings: dict, model_path: str, tokenizer, prompts: list[str],
                    max_new_tokens: int, batch_size: int) -> Path:
    """Generate and write the set atomically into `directory` (rows + settings + the outputs marker)."""
    import torch
    from transformers import AutoModelForCausalLM

    check_output_dir(directory, "output_dir", DISTILL_COMMAND)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32 if not torch.cuda.is_available()
                                                 else "auto")
    if torch.cuda.is_available():
        model = model.to("cuda")
    rows = generate_answers(model, tokenizer, prompts, max_new_tokens, batch_size)
    del model
    with replace_dir(directory, DISTILL_COMMAND) as tmp:
        (tmp / ROWS).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        (tmp / SETTINGS).write_text(json.dumps(settings, indent=2, sort_keys=True), encoding="utf-8")
    print(f"wrote {directory / ROWS} ({len(rows)} self-distilled rows)")
    return directory / ROWS
