"""Import a checkpoint of the official TRM or HRM code as an exported network.

    python -m pretrain.import_official CHECKPOINT [--config YAML | --recipe NAME] [--set KEY=VALUE ...]
                                      [--keep-puzzle-table] --out EXPORT_DIR

CHECKPOINT is a file written by the official ``save_train_state`` (TRM, HRM, or a fork that keeps
their module names): a ``torch.save``d dict of name -> tensor whose names start
``_orig_mod.model.inner.`` (trained with torch.compile) or ``model.inner.`` (without); both are
accepted. It is loaded with ``torch.load(map_location="cpu", weights_only=True)``: the tensors were
written on GPUs, and no code inside the pickle ever runs.

The config is the official ``all_config.yaml`` (``--config``, default: the one beside CHECKPOINT),
or a named recipe for a known checkpoint that travels without one (``OFFICIAL_RECIPES``). Its ``arch.name``
picks TRM (``mlp_t: true``: TRM-MLP) or HRM; keys absent from the ``arch`` section take the official
defaults. ``--set KEY=VALUE`` (repeatable, and several pairs after one flag) then changes any key of
the ``arch`` section (the ``arch.`` prefix is optional) or ``seq_len`` (not in the file; default
900, a 30x30 canvas), in order; VALUE is read as a YAML scalar. ``--set H_cycles=4
halt_max_steps=10`` is NVARC's test-time setting. No value is guessed from the tensors: the config
must agree with them, and where it does not the error names the key and both values.

On success (exit 0) EXPORT_DIR holds ``model.safetensors`` and ``model.json`` as
``pretrain.export`` writes them (load with ``pretrain.export.load_exported``): the network tensors
equal to the checkpoint's after conversion to fp32, and ``puzzle_mean``, the mean of the
checkpoint's puzzle table (the row the official loader gives new puzzles). With
``--keep-puzzle-table``, also ``puzzle_table.safetensors``: one fp32 tensor ``"weight"``
(num_ids, puzzle_emb_ndim), row i = official puzzle id i, loadable by
``PuzzleEmbedding.load_state_dict``; without it, no such file.

Every error (not a torch file, not a dict of tensors, a pickle that would run code, an unknown or
missing tensor, a config that disagrees with the tensor shapes, a bad config or ``--set``) is one
line on stderr and exit status 2, and nothing is written: the files are staged in a temporary
folder beside EXPORT_DIR and moved in only once complete.

Other code calls ``is_official_checkpoint(path)`` (a cheap look at the file's pickle, no tensor
loaded) and ``import_checkpoint(...)``, which raises ``OfficialImportError`` with the same one-line
messages.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors.torch import save_file
from torch import Tensor

from arc_data.encoding import VOCAB_SIZE
from pretrain.config import ModelConfig, parse_setting, swiglu_inner
from pretrain.export import WEIGHTS, export_network
from pretrain.model import RecursiveModel, build_model, count_parameters

CONFIG_FILE = "all_config.yaml"
PUZZLE_TABLE_FILE = "puzzle_table.safetensors"
PREFIXES = ("_orig_mod.model.inner.", "model.inner.")  # compiled, uncompiled
DEFAULT_SEQ_LEN = 900  # the official ARC datasets: a 30x30 canvas

# ---------------------------------------------------------------------------------------------
# Names: official (after the prefix) -> project (pretrain/model.py). "{i}" is a block index.

TENSOR_NAMES: dict[str, str] = {
    "embed_tokens.embedding_weight": "embed_tokens",
    "lm_head.weight": "lm_head.weight",
    "q_head.weight": "q_head.weight",
    "q_head.bias": "q_head.bias",
    "H_init": "y_init",  # TRM: the answer y; HRM: z_H
    "L_init": "z_init",  # TRM: the latent z; HRM: z_L
}
BLOCK_NAMES: dict[str, str] = {
    "self_attn.qkv_proj.weight": "attn.qkv.weight",  # [q heads | k heads | v heads] on both sides
    "self_attn.o_proj.weight": "attn.out.weight",
    "mlp_t.gate_up_proj.weight": "token_mlp.gate_up.weight",  # TRM-MLP's sequence SwiGLU, [gate | up]
    "mlp_t.down_proj.weight": "token_mlp.down.weight",
    "mlp.gate_up_proj.weight": "mlp.gate_up.weight",  # [gate | up] on both sides
    "mlp.down_proj.weight": "mlp.down.weight",
}
LEVEL_NAMES: dict[str, dict[str, str]] = {  # official module -> project module, per family
    "trm": {"L_level": "net"},
    "hrm": {"H_level": "H_net", "L_level": "L_net"},
}
PUZZLE_TABLE = "puzzle_emb.weights"  # (num_ids, puzzle_emb_ndim): kept out of the network

# ---------------------------------------------------------------------------------------------
# Configs: the official model names, the arch keys with their types and official defaults.

MODEL_FAMILIES = {
    "recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1": "trm",  # SamsungSAILMontreal/TinyRecursiveModels
    "hrm.hrm_act_v1@HierarchicalReasoningModel_ACTV1": "hrm",  # sapientinc/HRM
}
REQUIRED = object()
# key -> (type, official default or REQUIRED); per family (HRM has no mlp_t, puzzle_emb_len, no_ACT_continue).
_COMMON_KEYS: dict[str, tuple[type, Any]] = {
    "H_cycles": (int, REQUIRED), "L_cycles": (int, REQUIRED), "L_layers": (int, REQUIRED),
    "hidden_size": (int, REQUIRED), "num_heads": (int, REQUIRED), "expansion": (float, REQUIRED),
    "puzzle_emb_ndim": (int, 0), "pos_encodings": (str, REQUIRED),
    "halt_max_steps": (int, REQUIRED), "halt_exploration_prob": (float, REQUIRED),
    "rope_theta": (float, 10000.0), "rms_norm_eps": (float, 1e-5), "forward_dtype": (str, "bfloat16"),
}
ARCH_KEYS: dict[str, dict[str, tuple[type, Any]]] = {
    "trm": {**_COMMON_KEYS, "H_layers": (int, 0),  # ignored by TRM
            "mlp_t": (bool, False), "puzzle_emb_len": (int, 16), "no_ACT_continue": (bool, True)},
    "hrm": {**_COMMON_KEYS, "H_layers": (int, REQUIRED)},
}
LOSS = {"name": "losses@ACTLossHead", "loss_type": "stablemax_cross_entropy"}  # what the project trains with

# The official ARC command's TRM-Att (README: arch=trm L_layers=2 H_cycles=3 L_cycles=4 ema=True).
_OFFICIAL_ARC_TRM: dict[str, Any] = {
    "name": "recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1", "loss": dict(LOSS),
    "H_cycles": 3, "L_cycles": 4, "H_layers": 0, "L_layers": 2, "hidden_size": 512, "num_heads": 8,
    "expansion": 4, "puzzle_emb_ndim": 512, "puzzle_emb_len": 16, "pos_encodings": "rope",
    "halt_max_steps": 16, "halt_exploration_prob": 0.1, "forward_dtype": "bfloat16", "mlp_t": False,
    "no_ACT_continue": True,
}
OFFICIAL_RECIPES: dict[str, dict[str, Any]] = {
    # ARC Prize's verification checkpoints (Hugging Face arcprize/trm_arc_prize_verification):
    # arc_v1_public/step_518071 and arc_v2_public/step_723914, trained with the official ARC commands.
    "arcprize-arc1": _OFFICIAL_ARC_TRM,
    "arcprize-arc2": _OFFICIAL_ARC_TRM,
    # NVARC's TRM (Kaggle dataset cpmpml/arc-prize-trm-031, step_220708), pretrained with the same
    # architecture; its test-time H_cycles=4 halt_max_steps=10 belong to the fine-tuning preset
    # (submission/config.py, kaggle-nvarc) or to --set.
    "nvarc-trm-031": _OFFICIAL_ARC_TRM,
}


class OfficialImportError(Exception):
    """An official checkpoint that cannot be imported; the message is one line naming the problem."""


@dataclass
class Imported:
    """What an import wrote."""

    config: ModelConfig
    parameters: int
    puzzle_ids: int  # rows of the checkpoint's puzzle table
    prefix: str  # the key prefix found in the file
    files: list[Path]


# ---------------------------------------------------------------------------------------------
# Reading the checkpoint


def is_official_checkpoint(path: Path | str) -> bool:
    """True for a torch zip file whose pickle names ``model.inner.`` tensors; no tensor is loaded.

    A folder (an export, a run) or any other file is not one.
    """
    path = Path(path)
    if not path.is_file() or not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")]
            if len(pickles) != 1 or archive.getinfo(pickles[0]).file_size > 16 * 2**20:
                return False
            data = archive.read(pickles[0])
    except (OSError, zipfile.BadZipFile):
        return False
    return b"model.inner." in data  # a substring of both prefixes


def check_checkpoint_file(path: Path) -> None:
    """The cheap checks before loading: a file, and a zip archive as ``torch.save`` writes."""
    if path.is_dir():
        steps = sorted(p.name for p in path.glob("step_*"))
        hint = f" (it holds {', '.join(steps)})" if steps else ""
        raise OfficialImportError(f"{path}: is a folder; pass the checkpoint file inside it{hint}")
    if not path.is_file():
        raise OfficialImportError(f"{path}: no such file")
    if not zipfile.is_zipfile(path):
        raise OfficialImportError(f"{path}: not a torch checkpoint (torch.save writes a zip archive)")


def read_checkpoint(path: Path) -> tuple[str, dict[str, Tensor]]:
    """The file's key prefix and its tensors by official name (prefix stripped), on the CPU."""
    check_checkpoint_file(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises many types for a bad file; each becomes one line
        raise OfficialImportError(f"{path}: {_load_failure(error)}") from None
    if not isinstance(state, dict):
        raise OfficialImportError(f"{path}: holds a {type(state).__name__}, not a dict of tensors")
    prefix = next((p for p in PREFIXES if any(str(k).startswith(p) for k in state)), None)
    tensors = {}
    for key, value in state.items():
        if not isinstance(value, Tensor):
            raise OfficialImportError(f"{path}: {key!r} holds a {type(value).__name__}, not a tensor "
                                      "(expected a dict of tensors as official save_train_state writes)")
        if prefix is None or not str(key).startswith(prefix):
            raise OfficialImportError(f"{path}: unknown key {key!r} (official names start "
                                      f"{' or '.join(PREFIXES)})")
        tensors[key[len(prefix):]] = value
    if prefix is None:
        raise OfficialImportError(f"{path}: holds no tensors")
    return prefix, tensors


def _load_failure(error: Exception) -> str:
    """One line for a failed ``torch.load``."""
    text = str(error)
    refused = re.search(r"unsupported GLOBAL (\S+)", text) or re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if refused:
        return f"refused: its pickle would call {refused.group(1)} (only tensors are loaded, weights_only=True)"
    if "Weights only load failed" in text:
        return "refused: its pickle holds more than tensors (only tensors are loaded, weights_only=True)"
    first = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    return f"not a readable torch file ({first})"


# ---------------------------------------------------------------------------------------------
# Reading the config


def read_config(path: Path) -> dict[str, Any]:
    """The ``arch`` section of an official ``all_config.yaml``."""
    import yaml  # only needed for a config file

    if not path.is_file():
        raise OfficialImportError(f"{path}: no such config file")
    try:
        document = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise OfficialImportError(f"{path}: not valid YAML ({' '.join(str(error).split())})") from None
    arch = document.get("arch") if isinstance(document, dict) else None
    if not isinstance(arch, dict):
        raise OfficialImportError(f"{path}: no 'arch' section (is this an official {CONFIG_FILE}?)")
    return dict(arch)


def apply_sets(arch: dict[str, Any], sets: Sequence[str]) -> tuple[dict[str, Any], int]:
    """``arch`` and ``seq_len`` after the ``KEY=VALUE`` changes, in order (``config.parse_setting``)."""
    arch, seq_len = dict(arch), DEFAULT_SEQ_LEN
    known = set(ARCH_KEYS["trm"]) | set(ARCH_KEYS["hrm"]) | {"name"}
    for item in sets:
        try:
            key, value = parse_setting(item)
        except ValueError as error:
            raise OfficialImportError(str(error)) from None
        key = key.removeprefix("arch.")
        if key != "seq_len" and key not in known:
            raise OfficialImportError(f"--set {item!r}: {key!r} is not an arch key nor seq_len "
                                      f"(known: seq_len, {', '.join(sorted(known))})")
        if value is None or isinstance(value, (dict, list)):
            raise OfficialImportError(f"--set {item!r}: {item.partition('=')[2]!r} is not a single value")
        if key == "seq_len":
            seq_len = _typed("seq_len", value, int)
        else:
            arch[key] = value
    return arch, seq_len


def _typed(key: str, value: Any, kind: type) -> Any:
    """``value`` as ``kind``; YAML 1.1 reads ``1e-5`` as a string, so floats are also parsed from text."""
    if kind is bool and isinstance(value, bool):
        return value
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is float and not isinstance(value, bool):
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    if kind is str and isinstance(value, str):
        return value
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    raise OfficialImportError(f"arch.{key} must be {names[kind]}, got {value!r}")


def resolve_arch(arch: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The model family and every arch value typed, absent keys at the official defaults."""
    name = arch.get("name")
    family = MODEL_FAMILIES.get(name) if isinstance(name, str) else None
    if family is None:
        raise OfficialImportError(f"arch.name {name!r} is not a model this importer knows "
                                  f"({', '.join(MODEL_FAMILIES)})")
    keys = ARCH_KEYS[family]
    loss = arch.get("loss", LOSS)
    if not isinstance(loss, dict) or any(loss.get(k, v) != v for k, v in LOSS.items()):
        raise OfficialImportError(f"arch.loss {loss!r} is not supported (the project trains with "
                                  f"{LOSS['name']}, {LOSS['loss_type']})")
    unknown = sorted(set(arch) - set(keys) - {"name", "loss"})
    if unknown:
        raise OfficialImportError(f"arch.{unknown[0]} is not a key of {name} this importer knows "
                                  f"(it may change the model; known: {', '.join(sorted(keys))})")
    values = {}
    for key, (kind, default) in keys.items():
        if key in arch:
            values[key] = _typed(key, arch[key], kind)
        elif default is REQUIRED:
            raise OfficialImportError(f"arch.{key} is missing from the config and has no official default")
        else:
            values[key] = default
    return family, values


def model_config(family: str, arch: dict[str, Any], seq_len: int) -> ModelConfig:
    """The project's ModelConfig for an official arch section: hidden_size -> hidden, H_cycles -> T, L_cycles -> n,
    L_layers -> layers, halt_max_steps -> max_steps, sqrt(seq_len) -> canvas, and so on."""
    canvas = math.isqrt(seq_len) if seq_len > 0 else 0
    if canvas < 1 or canvas * canvas != seq_len:
        raise OfficialImportError(f"seq_len {seq_len} is not a perfect square (the canvas is side x side)")
    hidden, ndim = arch["hidden_size"], arch["puzzle_emb_ndim"]
    puzzle_tokens = -(ndim // -hidden)
    if family == "hrm":
        if arch["H_layers"] != arch["L_layers"]:
            raise OfficialImportError(f"arch.H_layers {arch['H_layers']} differs from arch.L_layers "
                                      f"{arch['L_layers']}; the project's HRM has one depth for both")
        prefix, arch_name = puzzle_tokens, "hrm"
    else:
        if not arch["no_ACT_continue"]:
            raise OfficialImportError("arch.no_ACT_continue false (a TRM trained with the continue loss) "
                                      "is not supported")
        prefix = arch["puzzle_emb_len"] or puzzle_tokens
        arch_name = "trm-mlp" if arch["mlp_t"] else "trm"
    pos = arch["pos_encodings"]
    if pos != "rope" and not (arch_name == "trm-mlp" and pos == "none"):
        raise OfficialImportError(f"arch.pos_encodings {pos!r} is not supported (rope; or none with mlp_t)")
    fields: dict[str, Any] = dict(
        arch=arch_name, hidden=hidden, heads=arch["num_heads"], mlp_inner=swiglu_inner(hidden, arch["expansion"]),
        layers=arch["L_layers"], T=arch["H_cycles"], n=arch["L_cycles"], prefix_tokens=prefix, puzzle_dim=ndim,
        vocab=VOCAB_SIZE, canvas=canvas, max_steps=arch["halt_max_steps"],
        halt_exploration=arch["halt_exploration_prob"], rope_base=arch["rope_theta"], pos_encoding="rope1d",
        norm_eps=arch["rms_norm_eps"], forward_dtype=arch["forward_dtype"])
    if arch_name == "trm-mlp":
        fields["token_mlp_inner"] = swiglu_inner(seq_len + prefix, arch["expansion"])
    try:
        return ModelConfig(**fields)
    except ValueError as error:
        raise OfficialImportError(f"the config gives an invalid model: {error}") from None


# ---------------------------------------------------------------------------------------------
# Mapping the tensors


def project_name(name: str, family: str) -> str | None:
    """The project's name for an official tensor name, or None when it has none."""
    if name in TENSOR_NAMES:
        return TENSOR_NAMES[name]
    match = re.fullmatch(r"(\w+)\.layers\.(\d+)\.(.+)", name)
    if match:
        level, index, rest = match.groups()
        module = LEVEL_NAMES[family].get(level)
        if module is not None and rest in BLOCK_NAMES:
            return f"{module}.blocks.{index}.{BLOCK_NAMES[rest]}"
    return None


def official_name(name: str, family: str) -> str:
    """The official name of a project tensor (the inverse of ``project_name``)."""
    for official, project in TENSOR_NAMES.items():
        if project == name:
            return official
    module, _, index, rest = name.split(".", 3)
    level = next(k for k, v in LEVEL_NAMES[family].items() if v == module)
    block = next(k for k, v in BLOCK_NAMES.items() if v == rest)
    return f"{level}.layers.{index}.{block}"


def check_shapes_against_config(family: str, arch: dict[str, Any], seq_len: int,
                                tensors: dict[str, Tensor]) -> None:
    """The config values that tensors reveal must agree with them; the error names the key and both values."""
    def disagree(what: str, ours: Any, theirs: Any, evidence: str) -> None:
        if ours != theirs:
            raise OfficialImportError(f"config and checkpoint disagree: {what} is {ours} in the config but "
                                      f"{theirs} in the checkpoint ({evidence})")

    def shape(name: str) -> str:
        return f"{name} {tuple(tensors[name].shape)}"

    levels = {m.group(1) for n in tensors if (m := re.match(r"(\w+)\.layers\.\d+\.", n))}
    foreign = sorted(levels - set(LEVEL_NAMES[family]))
    if foreign:
        raise OfficialImportError(f"config and checkpoint disagree: arch.name {_model_name(family)} has no "
                                  f"{foreign[0]} module, the checkpoint has {foreign[0]}.* tensors")
    embed = "embed_tokens.embedding_weight"
    if embed in tensors:
        disagree("arch.hidden_size", arch["hidden_size"], tensors[embed].shape[1], shape(embed))
        disagree("vocab_size (fixed by the ARC encoding)", VOCAB_SIZE, tensors[embed].shape[0], shape(embed))
    ndim = arch["puzzle_emb_ndim"]
    if PUZZLE_TABLE in tensors:
        disagree("arch.puzzle_emb_ndim", ndim, tensors[PUZZLE_TABLE].shape[1], shape(PUZZLE_TABLE))
    elif ndim > 0:
        raise OfficialImportError(f"config and checkpoint disagree: arch.puzzle_emb_ndim is {ndim} in the config "
                                  f"but the checkpoint has no {PUZZLE_TABLE}")
    for level, key in (("L_level", "L_layers"), ("H_level", "H_layers")):
        if level in LEVEL_NAMES[family]:
            count = len({m.group(1) for n in tensors if (m := re.match(rf"{level}\.layers\.(\d+)\.", n))})
            disagree(f"arch.{key}", arch[key], count, f"{level}.layers.* tensors")
    mlp_t = family == "trm" and arch["mlp_t"]
    has_mlp_t = any(".mlp_t." in n for n in tensors)
    disagree("arch.mlp_t", str(mlp_t).lower(), str(has_mlp_t).lower(), "mlp_t.* tensors present"
             if has_mlp_t else "no mlp_t.* tensors")
    gate_up = "L_level.layers.0.mlp.gate_up_proj.weight"
    if gate_up in tensors:
        inner = swiglu_inner(arch["hidden_size"], arch["expansion"])
        disagree(f"the SwiGLU inner size of arch.expansion {arch['expansion']:g}", inner,
                 tensors[gate_up].shape[0] // 2, shape(gate_up))
    token_gate_up = "L_level.layers.0.mlp_t.gate_up_proj.weight"
    if mlp_t and token_gate_up in tensors:
        width = seq_len + (arch["puzzle_emb_len"] or -(ndim // -arch["hidden_size"]))
        disagree("the sequence length seq_len + arch.puzzle_emb_len", width, tensors[token_gate_up].shape[1],
                 shape(token_gate_up))


def _model_name(family: str) -> str:
    return next(name for name, f in MODEL_FAMILIES.items() if f == family)


def load_network(config: ModelConfig, family: str, tensors: dict[str, Tensor]) -> RecursiveModel:
    """The project's network holding the checkpoint's tensors (fp32), every name accounted for."""
    model = build_model(config)
    expected = model.state_dict()
    state = {}
    for name, tensor in tensors.items():
        if name == PUZZLE_TABLE:
            continue
        ours = project_name(name, family)
        if ours is None or ours not in expected:
            raise OfficialImportError(f"unknown key {name!r}: no such tensor in the project's {config.arch} "
                                      f"network")
        if tuple(tensor.shape) != tuple(expected[ours].shape):
            raise OfficialImportError(f"config and checkpoint disagree: {name} is {tuple(tensor.shape)} in the "
                                      f"checkpoint but {tuple(expected[ours].shape)} from the config")
        state[ours] = tensor.to(torch.float32)
    missing = [official_name(n, family) for n in expected if n not in state]
    if missing:
        raise OfficialImportError(f"missing key {missing[0]!r}" + (f" (and {len(missing) - 1} more)"
                                                                   if len(missing) > 1 else ""))
    model.load_state_dict(state)
    return model


# ---------------------------------------------------------------------------------------------
# Writing


def write_export(out_dir: Path, model: RecursiveModel, puzzle_mean: Tensor, table: Tensor | None) -> list[Path]:
    """Stage the export beside ``out_dir`` and move it in only when complete (model.safetensors last)."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.importing-", dir=out_dir.parent))
    try:
        export_network(model, puzzle_mean, staging)
        if table is not None:
            save_file({"weight": table.to(torch.float32).contiguous()}, str(staging / PUZZLE_TABLE_FILE))
        out_dir.mkdir(exist_ok=True)
        written = sorted(staging.iterdir(), key=lambda p: p.name == WEIGHTS)
        for path in written:
            os.replace(path, out_dir / path.name)
        if table is None:
            (out_dir / PUZZLE_TABLE_FILE).unlink(missing_ok=True)  # a stale table of an earlier import
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [out_dir / p.name for p in written]


# ---------------------------------------------------------------------------------------------
# The import


@dataclass
class OfficialNetwork:
    """An official checkpoint read into this project's network, in memory."""

    model: RecursiveModel
    puzzle_mean: Tensor  # the mean of the checkpoint's puzzle rows (new tasks' rows start there)
    table: Tensor | None  # the puzzle table itself, when the checkpoint holds one
    prefix: str  # the key prefix found in the file


def read_official(checkpoint: Path | str, config: Path | str | None = None, recipe: str | None = None,
                  sets: Sequence[str] = ()) -> OfficialNetwork:
    """The network of an official checkpoint; raises ``OfficialImportError`` (one line) on any problem.

    The config is read and checked before the (possibly large) file is loaded."""
    checkpoint = Path(checkpoint)
    check_checkpoint_file(checkpoint)
    arch, seq_len = apply_sets(arch_section(checkpoint, config, recipe), sets)
    family, values = resolve_arch(arch)
    model_cfg = model_config(family, values, seq_len)
    prefix, tensors = read_checkpoint(checkpoint)
    check_shapes_against_config(family, values, seq_len, tensors)
    model = load_network(model_cfg, family, tensors)
    table = tensors.get(PUZZLE_TABLE)
    puzzle_mean = table.to(torch.float32).mean(0) if table is not None else torch.zeros(0)
    return OfficialNetwork(model, puzzle_mean, table, prefix)


def import_checkpoint(checkpoint: Path | str, out_dir: Path | str, *, config: Path | str | None = None,
                      recipe: str | None = None, sets: Sequence[str] = (),
                      keep_puzzle_table: bool = False) -> Imported:
    """Import ``checkpoint`` into an export in ``out_dir``; raises ``OfficialImportError`` (one line)
    on any problem. Everything is checked before anything is written."""
    official = read_official(checkpoint, config, recipe, sets)
    table = official.table
    try:
        written = write_export(Path(out_dir), official.model, official.puzzle_mean,
                               table if keep_puzzle_table else None)
    except OSError as error:
        raise OfficialImportError(f"{out_dir}: cannot write the export ({error})") from None
    return Imported(official.model.config, count_parameters(official.model), 0 if table is None else table.shape[0],
                    official.prefix, written)


def arch_section(checkpoint: Path, config: Path | str | None, recipe: str | None) -> dict[str, Any]:
    """The arch section from a named recipe, ``config``, or the all_config.yaml beside the checkpoint."""
    if config is not None and recipe is not None:
        raise OfficialImportError("give --config or --recipe, not both")
    if recipe is not None:
        if recipe not in OFFICIAL_RECIPES:
            raise OfficialImportError(f"unknown recipe {recipe!r} (known: {', '.join(sorted(OFFICIAL_RECIPES))})")
        return dict(OFFICIAL_RECIPES[recipe])
    if config is None and not (checkpoint.parent / CONFIG_FILE).is_file():
        raise OfficialImportError(f"{checkpoint}: no {CONFIG_FILE} beside it; pass --config FILE or "
                                  f"--recipe NAME ({', '.join(sorted(OFFICIAL_RECIPES))})")
    return read_config(Path(config) if config is not None else checkpoint.parent / CONFIG_FILE)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # a usage error is one line and exit 2, as every other error
        raise OfficialImportError(message)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = _Parser(prog="python -m pretrain.import_official",
                     description="Import a checkpoint of the official TRM/HRM code as an exported network.")
    parser.add_argument("checkpoint", type=Path, help="the official checkpoint file (e.g. step_518071)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--config", type=Path, help=f"its {CONFIG_FILE} (default: the one beside CHECKPOINT)")
    source.add_argument("--recipe", choices=sorted(OFFICIAL_RECIPES), help="the config of a known checkpoint without one")
    parser.add_argument("--set", nargs="+", action="append", default=[], metavar="KEY=VALUE",
                        help="change an arch key or seq_len (default 900), e.g. --set H_cycles=4 halt_max_steps=10")
    parser.add_argument("--keep-puzzle-table", action="store_true",
                        help=f"also write {PUZZLE_TABLE_FILE} (the trained puzzle rows)")
    parser.add_argument("--out", type=Path, required=True, help="the export folder to write")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
        sets = [item for group in args.set for item in group]
        result = import_checkpoint(args.checkpoint, args.out, config=args.config, recipe=args.recipe, sets=sets,
                                   keep_puzzle_table=args.keep_puzzle_table)
    except OfficialImportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    cfg = result.config
    print(f"imported {args.checkpoint} (keys {result.prefix}*): {cfg.arch}, {result.parameters:,} parameters, "
          f"T={cfg.T} n={cfg.n} max_steps={cfg.max_steps}, canvas {cfg.canvas}, {result.puzzle_ids:,} puzzle rows")
    print("wrote " + ", ".join(str(p) for p in result.files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
