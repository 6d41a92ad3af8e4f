"""Load and check the registry file (``datalayer.yaml``).

Every problem becomes one ``ConfigError`` that names the file, the line, the YAML path and what
would be valid. Only the active profile's values are expanded and validated in full, so the
``services`` profile's unset ``${VAR}``s never stop someone working on ``local``.
"""

from __future__ import annotations

import os
import re
import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from datalayer.categories import CATEGORIES, AnyPattern
from datalayer.config.serve import ServeConfig
from datalayer.config.store_types import load_store_type, serves, store_types
from datalayer.errors import ConfigError, MissingDriver, did_you_mean
from datalayer.patterns import PatternConfig, import_schema, schema_has_field
from datalayer.stores.base import StoreConfig
from datalayer.validators import Name, is_utf8

DEFAULT_CONFIG = "datalayer.yaml"
DEFAULT_PROFILE = "local"
_ENV_REF = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")

YamlPath = tuple[str | int, ...]
#: Values a registry may expand to (aliases counted each time they are used), and how deep it
#: may nest: far beyond any real registry, far below what would exhaust memory or the stack.
MAX_NODES = 100_000
MAX_DEPTH = 64


@dataclass
class Registry:
    """The checked registry for one profile: its stores and every pattern."""

    file: Path
    profile: str
    stores: dict[str, StoreConfig]
    patterns: dict[str, PatternConfig]
    profiles: list[str] = field(default_factory=list)
    serve: ServeConfig = field(default_factory=ServeConfig)

    @property
    def base_dir(self) -> Path:
        return self.file.parent


class _FileShape(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Literal[1]
    profiles: dict[Name, dict[Name, Any]]
    patterns: dict[Name, Any]
    serve: Any = None


def config_path(path: str | os.PathLike[str] | None = None) -> Path:
    """The registry to use: the argument, else ``$DATALAYER_CONFIG``, else ./datalayer.yaml."""
    chosen = path or os.environ.get("DATALAYER_CONFIG") or DEFAULT_CONFIG
    return Path(chosen).expanduser().absolute()


def profile_name(profile: str | None = None) -> str:
    """The profile to use: the argument, else ``$DATALAYER_PROFILE``, else ``local``."""
    return profile or os.environ.get("DATALAYER_PROFILE") or DEFAULT_PROFILE


def load(path: str | os.PathLike[str] | None = None, profile: str | None = None) -> Registry:
    """Read, expand and check the registry for ``profile``."""
    file = config_path(path)
    return _Loader(file, profile_name(profile)).load()


class _Loader:
    def __init__(self, file: Path, profile: str) -> None:
        self.file = file
        self.profile = profile
        self.marks: dict[YamlPath, tuple[int, int]] = {}

    def error(self, message: str, path: YamlPath = ()) -> ConfigError:
        line = column = None
        for cut in range(len(path), -1, -1):
            if path[:cut] in self.marks:
                line, column = self.marks[path[:cut]]
                break
        return ConfigError(message, file=str(self.file), path=path, line=line, column=column)

    def load(self) -> Registry:
        raw = self.parse()
        shape = self.validated(_FileShape, raw, ())
        if self.profile not in shape.profiles:
            names = list(shape.profiles)
            raise self.error(
                f"profile '{self.profile}' is not defined{did_you_mean(self.profile, names)}; "
                f"profiles: {', '.join(names)}",
                ("profiles",),
            )
        for other, entries in shape.profiles.items():
            if other != self.profile:
                for name, entry in entries.items():
                    self.store_type_name(entry, ("profiles", other, name))
        self.check_variables(shape.profiles[self.profile], shape.patterns)
        stores = {
            name: self.store(name, _expand(entry))
            for name, entry in shape.profiles[self.profile].items()
        }
        patterns = {
            name: self.pattern(name, _expand(entry), stores)
            for name, entry in shape.patterns.items()
        }
        self.check_rollouts(patterns, stores)
        self.check_targets(patterns)
        self.check_feature_logs(patterns)
        serve = self.serve(shape.serve, patterns)
        return Registry(self.file, self.profile, stores, patterns, list(shape.profiles), serve)

    def parse(self) -> Any:
        try:
            text = self.file.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(
                "registry file not found (pass --config PATH or set DATALAYER_CONFIG)",
                file=str(self.file),
            ) from None
        except OSError as exc:
            raise ConfigError(
                f"cannot read the registry: {exc.strerror}", file=str(self.file)
            ) from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"the registry is not valid UTF-8 (byte {exc.start}: {exc.reason})",
                file=str(self.file),
            ) from None
        loader = yaml.SafeLoader(text)
        try:  # one parse: the node tree is checked, walked for marks, then made into values
            node = loader.get_single_node()
            if node is not None:
                self.check_size(node)
            data = loader.construct_document(node) if node is not None else None
        except RecursionError:
            raise ConfigError(
                f"the registry nests deeper than {MAX_DEPTH} levels", file=str(self.file)
            ) from None
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            problem = " ".join(filter(None, [exc.context, exc.problem]))
            raise ConfigError(
                f"invalid YAML: {problem}",
                file=str(self.file),
                line=mark.line + 1 if mark else None,
                column=mark.column + 1 if mark else None,
            ) from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"invalid YAML: {exc}", file=str(self.file)) from None
        finally:
            loader.dispose()
        if node is None or not isinstance(data, dict):
            raise ConfigError(
                "the registry must be a mapping with keys version, profiles and patterns",
                file=str(self.file),
            )
        self.walk(node, ())
        return data

    def check_size(self, root: yaml.Node) -> None:
        """Refuse a document whose aliases expand past ``MAX_NODES`` values (an alias bomb),
        that nests deeper than ``MAX_DEPTH`` or that holds a lone surrogate (``"\\ud800"``,
        which pydantic cannot even report), before anything walks it."""
        seen = 0
        stack: list[tuple[yaml.Node, int]] = [(root, 1)]
        while stack:
            node, depth = stack.pop()
            seen += 1
            text = node.value if isinstance(node, yaml.ScalarNode) else ""
            if seen > MAX_NODES or depth > MAX_DEPTH or not is_utf8(text):
                problem = (
                    f"expands to more than {MAX_NODES:,} values (aliases repeated inside aliases?)"
                    if seen > MAX_NODES
                    else f"nests deeper than {MAX_DEPTH} levels"
                    if depth > MAX_DEPTH
                    else "holds text that is not valid Unicode (a lone surrogate escape)"
                )
                mark = node.start_mark
                raise ConfigError(
                    f"the registry {problem}",
                    file=str(self.file),
                    line=mark.line + 1,
                    column=mark.column + 1,
                )
            if isinstance(node, yaml.MappingNode):
                stack.extend((child, depth + 1) for pair in node.value for child in pair)
            elif isinstance(node, yaml.SequenceNode):
                stack.extend((child, depth + 1) for child in node.value)

    def walk(self, node: yaml.Node, path: YamlPath) -> None:
        """Record where each key sits and refuse duplicate keys (YAML would keep the last)."""
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key_node, value_node in node.value:
                key = str(key_node.value)
                line = key_node.start_mark.line + 1
                if key in seen:
                    self.marks[(*path, key)] = (line, key_node.start_mark.column + 1)
                    raise self.error(
                        f"duplicate name '{key}': already defined at line {seen[key]}", (*path, key)
                    )
                seen[key] = line
                self.marks[(*path, key)] = (line, key_node.start_mark.column + 1)
                self.walk(value_node, (*path, key))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self.marks[(*path, i)] = (item.start_mark.line + 1, item.start_mark.column + 1)
                self.walk(item, (*path, i))

    def check_variables(self, stores: Mapping[str, Any], patterns: Mapping[str, Any]) -> None:
        """Every ``${VAR}`` without a default that the environment lacks, named at once with
        where each is used, rather than one at a time."""
        missing: dict[str, list[YamlPath]] = {}
        places: list[tuple[YamlPath, Any]] = [
            (("profiles", self.profile, n), e) for n, e in stores.items()
        ]
        places += [(("patterns", n), e) for n, e in patterns.items()]
        for path, entry in places:
            for name, where in _unset_variables(entry, path):
                missing.setdefault(name, []).append(where)
        if not missing:
            return
        listed = "; ".join(
            f"{name} (at {', '.join('.'.join(map(str, p)) for p in paths)})"
            for name, paths in missing.items()
        )
        hint = "set them, or give defaults as ${VAR:-value}"
        if any(name.startswith("DATALAYER_") for name in missing):
            hint = (
                "to start this project's development servers and set their URLs, run: "
                'eval "$(scripts/services up)"; or ' + hint
            )
        first = next(iter(missing.values()))[0]
        raise self.error(
            f"profile '{self.profile}' needs environment variables that are not set: "
            f"{listed}; {hint}",
            first,
        )

    def store_type_name(self, entry: Any, path: YamlPath) -> str:
        """The entry's store type, checked against the known types without importing any."""
        if not isinstance(entry, Mapping):
            raise self.error("a store must be a mapping with a 'type' key", path)
        known = store_types()
        if "type" not in entry:
            raise self.error(
                f"the store has no 'type'; known types: {', '.join(sorted(known))}", path
            )
        name = str(entry["type"])
        if name not in known:
            raise self.error(
                f"unknown store type '{name}'{did_you_mean(name, list(known))}; "
                f"known types: {', '.join(sorted(known))}",
                (*path, "type"),
            )
        return name

    def store_type_of(self, entry: Any, path: YamlPath) -> type[StoreConfig]:
        """The config class of an active profile's store: imported now, driver checked first."""
        name = self.store_type_name(entry, path)
        try:
            return load_store_type(name)
        except MissingDriver as exc:
            raise MissingDriver(f"{self.error('', (*path, 'type')).message}{exc.message}") from None

    def store(self, name: str, entry: Any) -> StoreConfig:
        path: YamlPath = ("profiles", self.profile, name)
        config: StoreConfig = self.validated(self.store_type_of(entry, path), entry, path)
        problem = config.verify(self.file.parent)
        if problem is not None:
            key, message = problem
            raise self.error(message, (*path, key))
        return config

    def pattern(self, name: str, entry: Any, stores: dict[str, StoreConfig]) -> PatternConfig:
        path: YamlPath = ("patterns", name)
        if not isinstance(entry, Mapping):
            raise self.error("a pattern must be a mapping with 'category' and 'store'", path)
        category = entry.get("category")
        if category not in CATEGORIES:
            known = list(CATEGORIES)
            hint = did_you_mean(str(category), known) if category is not None else ""
            what = (
                f"unknown category '{category}'{hint}" if category is not None else "no 'category'"
            )
            raise self.error(f"{what}; categories: {', '.join(known)}", (*path, "category"))
        pattern: PatternConfig = self.validated(_PATTERN_ADAPTER, entry, path, strip=category)
        pattern.bind(name)
        store = self.defined_store(pattern.store, stores, (*path, "store"))
        if pattern.category not in serves(store.type):
            able = [t for t in sorted(store_types()) if pattern.category in serves(t)]
            raise self.error(
                f"store '{pattern.store}' is of type '{store.type}', which cannot serve category "
                f"'{pattern.category}'; store types that can: {', '.join(able)}",
                (*path, "store"),
            )
        if pattern.schema_:
            try:
                schema = import_schema(pattern.schema_, self.file.parent)
            except ValueError as exc:
                raise self.error(
                    f"payload schema does not resolve: {exc}", (*path, "schema")
                ) from None
            pattern.bind(name, schema)
            for attribute, field_path in pattern.referenced_fields():
                if not schema_has_field(schema, field_path):
                    fields = list(schema.model_fields)
                    raise self.error(
                        f"field '{field_path}' is not in schema '{pattern.schema_}'"
                        f"{did_you_mean(field_path, fields)}; fields: {', '.join(fields)}",
                        (*path, attribute),
                    )
        return pattern

    def serve(self, entry: Any, patterns: dict[str, PatternConfig]) -> ServeConfig:
        """The ``serve`` block; each token's patterns must be feature patterns of the file."""
        config: ServeConfig = self.validated(ServeConfig, entry or {}, ("serve",))
        served = [name for name, p in patterns.items() if p.category == "feature"]
        for token_name, token in config.tokens.items():
            for i, name in enumerate(token.patterns):
                if name != "*" and name not in served:
                    raise self.error(
                        f"'{name}' is not a feature pattern{did_you_mean(name, served)}; "
                        f"feature patterns: {', '.join(served) or 'none'} (or '*' for all)",
                        ("serve", "tokens", token_name, "patterns", i),
                    )
        return config

    def check_feature_logs(self, patterns: dict[str, PatternConfig]) -> None:
        """A feature pattern's ``log.to`` names a streaming pattern of the file."""
        streams = [name for name, p in patterns.items() if p.category == "streaming"]
        for name, pattern in patterns.items():
            target = getattr(getattr(pattern, "log", None), "to", None)
            if target is not None and target not in streams:
                raise self.error(
                    f"'{target}' is not a streaming pattern{did_you_mean(target, streams)}; "
                    f"streaming patterns: {', '.join(streams) or 'none'}",
                    ("patterns", name, "log", "to"),
                )

    def defined_store(
        self, name: str, stores: dict[str, StoreConfig], where: YamlPath
    ) -> StoreConfig:
        """The profile's store ``name``; an error at ``where`` naming the stores there."""
        store = stores.get(name)
        if store is None:
            names = list(stores)
            raise self.error(
                f"store '{name}' is not defined in profile '{self.profile}'"
                f"{did_you_mean(name, names)}; stores there: {', '.join(names) or 'none'}",
                where,
            )
        return store

    def check_rollouts(
        self, patterns: dict[str, PatternConfig], stores: dict[str, StoreConfig]
    ) -> None:
        """A pattern's ``rollout.to`` names another store of the profile that serves its
        category."""
        for name, pattern in patterns.items():
            rollout = pattern.store_rollout()
            if rollout is None:
                continue
            where = ("patterns", name, "rollout", "to")
            target = self.defined_store(rollout.to, stores, where)
            if rollout.to == pattern.store:
                raise self.error(
                    f"the pattern is on store '{rollout.to}' already: name the store it moves to",
                    where,
                )
            if pattern.category not in serves(target.type):
                raise self.error(
                    f"store '{rollout.to}' is of type '{target.type}', which cannot serve "
                    f"category '{pattern.category}'",
                    where,
                )

    def check_targets(self, patterns: dict[str, PatternConfig]) -> None:
        """Two patterns may not share a table, topic or collection on one store, even under
        names the store folds together, nor key prefixes where one starts with the other
        (one pattern would read the other's keys)."""
        owners: dict[tuple[str, str, str], tuple[str, str]] = {}
        prefixes: list[tuple[str, str, str]] = []
        for name, pattern, store in _placements(patterns):
            moving = "" if store == pattern.store else " (where it is moving)"
            for target in pattern.targets():
                where = ("patterns", name, target.attribute)
                if target.kind == "key prefix":
                    for on, prefix, owner in prefixes:
                        if on == store and (
                            prefix.startswith(target.name) or target.name.startswith(prefix)
                        ):
                            raise self.error(
                                f"{target.label} overlaps key prefix '{prefix}' of pattern "
                                f"'{owner}' on store '{store}'{moving}: one could read the "
                                "other's keys; give each a prefix that does not start with "
                                "the other",
                                where,
                            )
                    prefixes.append((store, target.name, name))
                    continue
                slot = (store, target.kind, target.folded())
                if slot in owners:
                    owner, taken = owners[slot]
                    alike = "" if taken == target.name else f" as '{taken}' (the store folds them)"
                    raise self.error(
                        f"{target.label} on store '{store}'{moving} is already used by pattern "
                        f"'{owner}'{alike}; each pattern needs its own",
                        where,
                    )
                owners[slot] = (name, target.name)

    def validated(self, model: Any, data: Any, path: YamlPath, strip: str | None = None) -> Any:
        """Validate with pydantic; ``strip`` drops the union tag pydantic puts in front of locs."""
        try:
            if isinstance(model, TypeAdapter):
                return model.validate_python(data)
            return model.model_validate(data)
        except PydanticValidationError as exc:
            errors = exc.errors()
            first = errors[0]
            loc = tuple(first["loc"])
            if strip is not None and loc[:1] == (strip,):
                loc = loc[1:]
            message = _describe(first, CATEGORIES[strip] if strip else model, loc)
            if len(errors) > 1:
                message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
            raise self.error(message, (*path, *loc)) from None


_PATTERN_ADAPTER: TypeAdapter[PatternConfig] = TypeAdapter(AnyPattern)


def _placements(patterns: dict[str, PatternConfig]) -> Iterator[tuple[str, PatternConfig, str]]:
    """Each pattern with each store it keeps data on: its own, and the one it is moving to."""
    for name, pattern in patterns.items():
        yield name, pattern, pattern.store
        rollout = pattern.store_rollout()
        if rollout is not None:
            yield name, pattern, rollout.to


def _describe(error: Any, model: Any, loc: Sequence[Any]) -> str:
    """One pydantic error as a sentence that says what would be valid."""
    kind = error["type"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(model, loc)
        key = str(loc[-1]) if loc else "?"
        hint = did_you_mean(key, allowed)
        return f"unknown key '{key}'{hint}; valid keys: {', '.join(allowed)}"
    if kind == "missing":
        return f"required key '{loc[-1]}' is missing" if loc else "a required key is missing"
    message = str(error["msg"])
    return message[0].lower() + message[1:] if message else kind


def _allowed_keys(model: Any, loc: Sequence[Any]) -> list[str]:
    target = model
    for part in loc[:-1]:
        fields = (
            target.model_fields
            if isinstance(target, type) and issubclass(target, BaseModel)
            else {}
        )
        field_info = fields.get(part)
        annotation = field_info.annotation if field_info else None
        # an optional block (``Block | None``) is its model
        models = [
            a
            for a in (typing.get_args(annotation) or (annotation,))
            if isinstance(a, type) and issubclass(a, BaseModel)
        ]
        if len(models) != 1:
            return []
        target = models[0]
    if not (isinstance(target, type) and issubclass(target, BaseModel)):
        return []
    return [f.alias or name for name, f in target.model_fields.items()]


def _unset_variables(value: Any, path: YamlPath) -> Iterator[tuple[str, YamlPath]]:
    """(name, where) of each ``${VAR}`` below ``value`` that has no default and is unset."""
    if isinstance(value, str):
        for match in _ENV_REF.finditer(value):
            if match["default"] is None and match["name"] not in os.environ:
                yield match["name"], path
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _unset_variables(item, (*path, str(key)))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _unset_variables(item, (*path, i))


def _expand(value: Any) -> Any:
    """Every ``${VAR}`` and ``${VAR:-default}`` below ``value`` replaced (an unset one without
    a default was refused before, naming it: ``check_variables``)."""
    if isinstance(value, str):
        return _ENV_REF.sub(lambda m: os.environ.get(m["name"], m["default"] or ""), value)
    if isinstance(value, Mapping):
        return {k: _expand(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v) for v in value]
    return value
