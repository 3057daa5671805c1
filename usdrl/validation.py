"""One validation for everything the project reads from outside: YAML (layouts, params), the structure of pickles,
the JSON files (model.json, results files, manifests) and the weights of checkpoints and bundles.

Every check raises the error class its caller passes (DataError, LayoutError, ConfigError, CheckpointError,
BundleError), with one line naming the file, the field and what was expected. The recorded settings of
checkpoints and bundles are checked by ``recorded_section``: the sections and ranges of params.yaml
(``usdrl.settings.params.ALLOWED``), so a recorded setting is held to what params.yaml may hold.

Sizes are bounded before anything is allocated: a YAML document or a pickle whose aliases or shared references
expand to more than ``MOST_NODES`` values, or nest deeper than ``DEEPEST``, is refused before it is walked.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import yaml

MOST_NODES = 1_000_000  # values a YAML document or a pickle may expand to (aliases and shared references counted)
DEEPEST = 64  # the deepest nesting of lists and mappings
MOST_YAML_ALIASES = 1_000


def shown(value: Any, most: int = 60) -> str:
    """``value`` as a short one-line text for an error message."""
    text = " ".join(repr(value).split())
    return text if len(text) <= most else text[:most] + "..."


# -- YAML ----------------------------------------------------------------------------------------------------------
def _check_yaml_nodes(root: yaml.Node, source: str, error: type[Exception]) -> None:
    """Refuse a composed YAML document that expands to too many values, nests too deep, uses too many aliases or
    repeats a key in a mapping. Walked without expanding: each node's expanded size is computed once."""
    sizes: dict[int, int] = {}
    aliases = 0

    def size(node: yaml.Node, depth: int) -> int:
        nonlocal aliases
        if depth > DEEPEST:
            raise error(f"{source}: line {node.start_mark.line + 1}: nested deeper than {DEEPEST} levels; a "
                        f"settings or layout file never is")
        if id(node) in sizes:
            aliases += 1
            if aliases > MOST_YAML_ALIASES:
                raise error(f"{source}: more than {MOST_YAML_ALIASES} aliases (*name); refused (a YAML alias bomb?)")
            return sizes[id(node)]
        sizes[id(node)] = 1  # a node reached again while being walked (a recursive alias) counts once
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(item, depth + 1) for item in node.value)
        elif isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                    if key.value in seen:
                        raise error(f"{source}: line {key.start_mark.line + 1}: duplicate key {key.value!r} (first "
                                    f"on line {seen[key.value]}); keep one")
                    seen[key.value] = key.start_mark.line + 1
                total += size(key, depth + 1) + size(value, depth + 1)
        if total > MOST_NODES:
            raise error(f"{source}: line {node.start_mark.line + 1}: expands to more than {MOST_NODES:,} values "
                        f"(aliases of aliases: a YAML alias bomb?); refused before it is read")
        sizes[id(node)] = total
        return total

    size(root, 0)


def load_yaml(text: str, source: str, error: type[Exception]) -> Any:
    """The YAML document ``text`` as plain values (yaml.safe_load), refused with ``error`` (one line naming
    ``source``) when it is not valid YAML, repeats a key, or expands beyond the bounds (``MOST_NODES``,
    ``DEEPEST``, ``MOST_YAML_ALIASES``) before any value is constructed."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_yaml_nodes(node, source, error)
        return loader.construct_document(node)
    except yaml.YAMLError as problem:
        raise error(f"{source} is not valid YAML (could not be parsed): {' '.join(str(problem).split())}") from None
    except RecursionError:
        raise error(f"{source}: nested deeper than {DEEPEST} levels; a settings or layout file never is") from None
    finally:
        loader.dispose()


# -- plain structures (pickles) ------------------------------------------------------------------------------------
def check_structure_size(value: Any, source: str, error: type[Exception], most: int = MOST_NODES,
                         deepest: int = DEEPEST) -> None:
    """Refuse lists, tuples, sets and dicts that expand to more than ``most`` values or nest deeper than
    ``deepest`` (a pickle may share one list many times, a "billion laughs"), or that contain themselves. Each
    container is counted once, so the check is as fast as the distinct objects; arrays and scalars count one."""
    sizes: dict[int, int] = {}
    walking: set[int] = set()

    def size(item: Any, depth: int) -> int:
        if not isinstance(item, (list, tuple, set, frozenset, dict)):
            return 1
        if depth > deepest:
            raise error(f"{source}: nested deeper than {deepest} levels; refused")
        key = id(item)
        if key in sizes:
            return sizes[key]
        if key in walking:
            raise error(f"{source}: a container holds itself; refused")
        walking.add(key)
        children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
        total = 1 + sum(size(child, depth + 1) for child in children)
        walking.discard(key)
        if total > most:
            raise error(f"{source}: its containers expand to more than {most:,} values (shared references: a "
                        f"pickle bomb?); refused")
        sizes[key] = total
        return total

    size(value, 0)


# -- typed fields of JSON files --------------------------------------------------------------------------------------
def is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_string_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


# What a field may hold: (what is expected, in words; the test)
Kind = tuple[str, Callable[[Any], bool]]
MAPPING: Kind = ("a mapping", lambda value: isinstance(value, dict))
STRING: Kind = ("a string", lambda value: isinstance(value, str))
BOOLEAN: Kind = ("true or false", lambda value: isinstance(value, bool))
LIST: Kind = ("a list", lambda value: isinstance(value, list))
STRING_LIST: Kind = ("a list of strings", is_string_list)
NUMBER: Kind = ("a finite number", is_number)
POSITIVE_INTEGER: Kind = ("a positive integer", lambda value: is_integer(value) and value > 0)
COUNT: Kind = ("an integer of at least 0", lambda value: is_integer(value) and value >= 0)
SHA256: Kind = ("a sha256 (64 hex digits)", lambda value: isinstance(value, str) and len(value) == 64
                and all(character in "0123456789abcdef" for character in value))


def optional(kind: Kind) -> Kind:
    """``kind`` or null."""
    return (f"{kind[0]} or null", lambda value: value is None or kind[1](value))


def one_of(*choices: Any) -> Kind:
    return (f"one of {', '.join(map(str, choices))}", lambda value: isinstance(value, type(choices[0]))
            and value in choices)


def mapping_of(key_kind: Kind, value_kind: Kind) -> Kind:
    return (f"a mapping of {key_kind[0]} to {value_kind[0]}", lambda value: isinstance(value, dict) and all(
        key_kind[1](key) and value_kind[1](item) for key, item in value.items()))


def check_fields(container: Any, fields: dict[str, Kind], source: str, error: type[Exception], where: str = "",
                 optional_fields: tuple[str, ...] = ()) -> dict[str, Any]:
    """``container``, checked to be a mapping whose ``fields`` hold values of their kind (a field of
    ``optional_fields`` may be left out; other keys are allowed: newer versions add them); ``error`` naming
    ``source`` and the field otherwise."""
    name = where or "the file"
    if not isinstance(container, dict):
        raise error(f"{source}: {name} must be a mapping, got {shown(container)}")
    for field, (expected, test) in fields.items():
        dotted = f"{where}.{field}" if where else field
        if field not in container:
            if field in optional_fields:
                continue
            raise error(f"{source}: {dotted} is missing; expected {expected}")
        if not test(container[field]):
            raise error(f"{source}: {dotted} must be {expected}, got {shown(container[field])}")
    return container


# -- recorded settings -----------------------------------------------------------------------------------------------
def recorded_section(section: type, values: Any, source: str, error: type[Exception], where: str) -> Any:
    """The params.yaml section ``section`` (ModelSection, AugmentSection, ...) from settings a file records,
    checked exactly as params.yaml is (types and ``ALLOWED`` ranges), plus, for the model, a DSA gap no larger
    than the clip; ``error`` naming ``source`` and the field otherwise."""
    from usdrl.settings.params import build_section
    from usdrl.settings.sections import ConfigError, ModelSection

    try:
        built = build_section(section, values, where, lambda key: source)
    except ConfigError as problem:
        raise error(str(problem)) from None
    if section is ModelSection and isinstance(built.clip_frames, int) and built.gap > built.clip_frames:
        raise error(f"{source}: {where}.gap ({built.gap}) must be at most {where}.clip_frames "
                    f"({built.clip_frames})")
    return built


# -- weights -----------------------------------------------------------------------------------------------------
def check_weights(tensors: dict[str, Any], source: str, error: type[Exception]) -> None:
    """Refuse weights that are not floating-point tensors or hold NaN or infinity; the first bad one is named."""
    import torch

    for name, tensor in tensors.items():
        if not isinstance(tensor, torch.Tensor):
            raise error(f"{source}: weight {name} must be a tensor, got {type(tensor).__name__}")
        if not (tensor.is_floating_point() or tensor.dtype == torch.bool) and not name.endswith(
                "num_batches_tracked"):
            raise error(f"{source}: weight {name} must be floating-point, got {str(tensor.dtype).removeprefix('torch.')}"
                        f" (a damaged or forged file)")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise error(f"{source}: weight {name} holds NaN or infinite values; the training diverged or the file is "
                        f"damaged")


# -- the JSON files the project reads --------------------------------------------------------------------------------
def read_json(path: Any, error: type[Exception], what: str) -> Any:
    """The JSON content of the file ``path``; ``error`` (one line: the file, line and column) when it is not
    UTF-8 JSON."""
    import json

    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as problem:
        raise error(f"{path}:{problem.lineno}:{problem.colno}: malformed JSON ({problem.msg}); {what}") from None
    except UnicodeDecodeError:
        raise error(f"{path} is not a text file (binary data); {what}") from None


MANIFEST_FIELDS: dict[str, Kind] = {
    "layout": MAPPING, "class_names": STRING_LIST, "num_samples": COUNT, "kind": one_of("trimmed", "untrimmed"),
    "counts": MAPPING, "dataset": STRING, "input_fingerprint": optional(STRING), "preprocessing": optional(MAPPING),
}


def check_manifest(manifest: Any, source: str, error: type[Exception]) -> dict[str, Any]:
    """A prepared dataset's manifest.json: the fields the project reads, of their kind."""
    return check_fields(manifest, MANIFEST_FIELDS, source, error,
                        optional_fields=("kind", "counts", "dataset", "input_fingerprint", "preprocessing"))


PREPROCESSING_FIELDS: dict[str, Kind] = {
    "normalise": BOOLEAN, "max_frames": optional(POSITIVE_INTEGER), "longer_sequences": one_of("subsample", "truncate"),
    "clip_frames": POSITIVE_INTEGER, "steps": STRING_LIST, "training_data": MAPPING,
}
DESCRIPTION_FIELDS: dict[str, Kind] = {
    "files": mapping_of(STRING, SHA256), "encoder": MAPPING, "layout": MAPPING, "modality": ("one of joint, bone, motion",
    lambda value: value in ("joint", "bone", "motion")), "class_names": optional(STRING_LIST), "heads": MAPPING,
    "preprocessing": MAPPING, "source": MAPPING, "parameters": COUNT, "usdrl_version": STRING, "exported": MAPPING,
    "onnx": MAPPING,
}
CLASSIFIER_FIELDS: dict[str, Kind] = {"file": STRING, "classes": POSITIVE_INTEGER, "metrics": MAPPING,
                                      "provenance": MAPPING}
DETECTOR_FIELDS: dict[str, Kind] = {"file": STRING, "class_names": STRING_LIST, "settings": MAPPING,
                                    "metrics": MAPPING, "provenance": MAPPING, "preprocessing": MAPPING}
HEADS = ("classifier", "detector")


def check_description(description: dict[str, Any], source: str, error: type[Exception]) -> dict[str, Any]:
    """A bundle's model.json (already known to be ours and unchanged): every field ``assemble``, ``load_model``
    and the commands read, of its kind, the encoder's settings as params.yaml's model section, the detector's as
    its detection section, and the class names one per class of the classifier."""
    from usdrl.settings.sections import DetectionSection

    check_fields(description, DESCRIPTION_FIELDS, source, error, optional_fields=("onnx", "parameters"))
    check_fields(description["preprocessing"], PREPROCESSING_FIELDS, source, error, "preprocessing",
                 optional_fields=("steps", "training_data", "longer_sequences"))
    unknown = sorted(map(str, set(description["heads"]) - set(HEADS)))
    if unknown:
        raise error(f"{source}: heads holds {', '.join(unknown)}; expected only {', '.join(HEADS)}")
    classifier = description["heads"].get("classifier")
    if "classifier" in description["heads"]:
        check_fields(classifier, CLASSIFIER_FIELDS, source, error, "heads.classifier",
                     optional_fields=("file", "metrics", "provenance"))
        names = description["class_names"]
        if names is None or len(names) != classifier["classes"]:
            raise error(f"{source}: class_names must be a list of {classifier['classes']} names (heads.classifier."
                        f"classes), got {shown(names)}")
    detector = description["heads"].get("detector")
    if "detector" in description["heads"]:
        check_fields(detector, DETECTOR_FIELDS, source, error, "heads.detector",
                     optional_fields=("file", "metrics", "provenance"))
        check_fields(detector["preprocessing"], PREPROCESSING_FIELDS, source, error, "heads.detector.preprocessing",
                     optional_fields=("steps", "training_data", "longer_sequences", "max_frames", "clip_frames"))
        known = {name: value for name, value in detector["settings"].items()  # a newer version's keys left out
                 if name in DetectionSection.__dataclass_fields__}
        recorded_section(DetectionSection, known, source, error, "heads.detector.settings")
    return description


RESULTS_FIELDS: dict[str, Kind] = {"protocol": STRING, "settings": MAPPING, "metrics": MAPPING, "provenance": MAPPING}
RESULTS_PROVENANCE_FIELDS: dict[str, Kind] = {"checkpoint_sha256": STRING, "checkpoint": optional(STRING)}


def check_results(result: Any, source: str, error: type[Exception], protocol: str) -> dict[str, Any]:
    """A results file used as an input (``usdrl export --probe/--detector``): a mapping of ``protocol`` with its
    settings, metrics and provenance of their kind."""
    check_fields(result, {"protocol": STRING}, source, error)
    if result["protocol"] != protocol:
        raise error(f"{source} is not a {protocol} results file (protocol {result['protocol']!r})")
    check_fields(result, RESULTS_FIELDS, source, error)
    check_fields(result["provenance"], RESULTS_PROVENANCE_FIELDS, source, error, "provenance",
                 optional_fields=("checkpoint",))
    if protocol == "linear_probe":
        check_fields(result["settings"], {"modality": STRING, "probe": optional(MAPPING)}, source, error, "settings",
                     optional_fields=("probe",))
    if protocol == "detection":
        check_fields(result["settings"], {"detection": MAPPING}, source, error, "settings")
        check_fields(result["metrics"], {"by_overlap": MAPPING, "proposals": optional(COUNT)}, source, error,
                     "metrics", optional_fields=("proposals",))
        check_fields(result["provenance"], {"data_root": STRING, "data_manifest_sha256": optional(STRING)}, source,
                     error, "provenance", optional_fields=("data_manifest_sha256",))
    return result


def check_head(tensors: dict[str, Any], shapes: dict[str, tuple[int, ...]], source: str,
               error: type[Exception]) -> None:
    """The head's tensors: each of ``shapes`` present with that shape, floating-point and finite."""
    import torch

    for name, shape in shapes.items():
        tensor = tensors.get(name)
        if not isinstance(tensor, torch.Tensor):
            raise error(f"{source}: the tensor {name} is missing; expected shape {shape}")
        if tuple(tensor.shape) != shape:
            raise error(f"{source}: the tensor {name} has shape {tuple(tensor.shape)}, expected {shape}")
    check_weights(tensors, source, error)
