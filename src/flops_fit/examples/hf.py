"""Any Hugging Face ``transformers`` architecture as a flops-fit model: ``model=hf`` builds it here.

``hf_model(architecture=..., config=..., data=..., **fields)`` makes the model's config from its
class and the fields (the size parameter, the tied ones, ``model.kwargs``) and builds the model
from that config, with random weights: nothing is ever downloaded.

``architecture``
    a model class (``LlamaForCausalLM``, ``GPT2LMHeadModel``, ``ViTForImageClassification``), a config
    class (``LlamaConfig``) or a ``model_type`` (``llama``); for the last two the head follows the data:
    a causal LM for text, an image classifier for images.
``config``
    a local ``config.json`` (or the folder holding one); its ``architectures`` entry names the class
    unless ``architecture`` is given. ``fields`` override its values.
``data``
    what the dataset fixes (``conf/model/hf.yaml`` passes it from ``dataset.*``): text sets
    ``vocab_size`` and ``max_position_embeddings`` (to ``seq_len``), images set ``image_size``,
    ``num_channels`` and ``num_labels``, where the config has those fields and ``fields`` does not
    give them (over the values of a ``config`` file: the data decides them). An image model gets ``data_unit = "images"`` so FLOPs and data count per image.
``fields``
    config fields; a field set to None keeps the config's own value (the file's, or the class default).

Parameter counts, the non-embedding count, the logits and FLOPs then come from the model as it is
(``flops_fit.flops``: ``num_parameters()``, 6ND, or measured).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from flops_fit.errors import FlopsFitError

EXAMPLES = "LlamaForCausalLM, GPT2LMHeadModel, ViTForImageClassification, LlamaConfig or llama"


def _transformers():
    try:
        import transformers
    except ImportError as e:
        raise FlopsFitError(f"model=hf needs transformers ({e}); pip install 'transformers>=4.40' "
                            "(or pip install 'flops-fit[text]')") from None
    return transformers


def _auto_class(transformers, kind: str | None):
    """The head a config alone gets: a causal LM for text, an image classifier for images."""
    if kind == "image":
        return transformers.AutoModelForImageClassification
    if kind in (None, "text"):
        return transformers.AutoModelForCausalLM
    return transformers.AutoModel


def _named(transformers, name: str):
    """(model class or None, config class) for a model class, config class or model_type name."""
    from transformers import CONFIG_MAPPING, PretrainedConfig, PreTrainedModel

    obj = getattr(transformers, name, None) if name and not name.startswith("_") else None
    if isinstance(obj, type) and issubclass(obj, PreTrainedModel) and isinstance(obj.config_class, type):
        return obj, obj.config_class
    if isinstance(obj, type) and issubclass(obj, PretrainedConfig):
        return None, obj
    if name in CONFIG_MAPPING:
        return None, CONFIG_MAPPING[name]
    raise FlopsFitError(
        f"model.architecture={name!r} is not a transformers model class, config class or model_type "
        f"(transformers {transformers.__version__}); give one, e.g. {EXAMPLES}, or model.config=/path/config.json"
    )


def _read_config_json(path: str) -> dict:
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / "config.json"
    if not p.is_file():
        raise FlopsFitError(f"model.config={path} is not a config.json (nor a folder holding one); "
                            "point it at a local transformers config.json")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except ValueError as e:
        raise FlopsFitError(f"model.config={path} is not valid JSON ({e}); fix the file") from None
    if not isinstance(data, dict) or "model_type" not in data:
        raise FlopsFitError(f"model.config={path} has no model_type; use a config.json that transformers wrote "
                            "(save_pretrained) or add \"model_type\": \"llama\"")
    return data


def _data_fields(default_config, data: Mapping | None) -> dict:
    """The config fields the dataset fixes, where the config class has them."""
    data = dict(data or {})
    kind = data.get("kind")
    wanted: dict[str, Any] = {}
    if kind == "text":
        wanted = {"vocab_size": data.get("vocab_size"), "max_position_embeddings": data.get("seq_len")}
    elif kind == "image":
        wanted = {"image_size": data.get("image_size"), "num_channels": data.get("channels"),
                  "num_labels": data.get("num_classes")}
    # num_labels is a property of every config; the others exist only where the architecture uses them
    return {k: int(v) for k, v in wanted.items()
            if v is not None and (k == "num_labels" or hasattr(default_config, k))}


def hf_model(architecture: str | None = None, config: str | None = None, data: Mapping | None = None,
             **fields: Any):
    """A ``transformers`` model with random weights from ``architecture`` / ``config`` and ``fields``."""
    transformers = _transformers()
    kind = (data or {}).get("kind")
    base: dict = {}
    if config:
        base = _read_config_json(config)
        if not architecture and base.get("architectures"):
            architecture = base["architectures"][0]
        if not architecture:
            architecture = base["model_type"]
    if not architecture:
        raise FlopsFitError(f"model=hf needs model.architecture (e.g. {EXAMPLES}) or model.config=/path/config.json")
    model_cls, config_cls = _named(transformers, str(architecture))
    fields = {k: v for k, v in fields.items() if v is not None}  # null: the config's own value
    base = {k: v for k, v in base.items() if k not in ("architectures", "transformers_version", "model_type")}
    # the file's values, then what the dataset fixes, then the sweep's own fields (size, ties, model.kwargs)
    values = {**base, **_data_fields(config_cls(), data), **fields}
    if "num_labels" in values:  # a label count, not the id2label of another dataset
        values.pop("id2label", None)
        values.pop("label2id", None)
    cfg = config_cls(**values)
    if model_cls is None:
        model = _auto_class(transformers, kind).from_config(cfg)
    else:
        model = model_cls(cfg)
    if kind == "image":
        model.data_unit = "images"
    return model
