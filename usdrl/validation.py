"""One validation for everything the project reads from outside: YAML (layouts, params), the structure of pickles,
the JSON files (model.json, results files, manifests) and the weights of checkpoints and bundles.

Every check raises the error class its caller passes (DataError, LayoutError, ConfigError, CheckpointError,
BundleError), with one line naming the file, the field and what was expected. The recorded settings of
checkpoints and bundles are checked by ``recorded_section``: the sections and ranges of params.yaml
(``usdrl.config.ALLOWED``), so a recorded setting is held to what params.yaml may hold.

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
        raise error(f"{source} is not valid YAML: {' '.join(str(problem).split())}") from None
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
    from usdrl.config import ConfigError, ModelSection, build_section

    try:
        built = build_section(section, values, where, lambda key: f"{source}: recorded")
    except ConfigError as problem:
        raise error(str(problem)) from None
    if section is ModelSection and isinstance(built.clip_frames, int) and built.gap > built.clip_frames:
        raise error(f"{source}: recorded {where}.gap ({built.gap}) must be at most {where}.clip_frames "
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
