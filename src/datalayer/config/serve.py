"""The registry's ``serve`` block: who may call ``datalayer serve``, and its request limits.

A token is named in the file and read from the environment when the server starts, so the
secret itself is never in the registry, a log line or a metric: only its name is.
"""

from __future__ import annotations

import os
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from datalayer.errors import ConfigError
from datalayer.validators import Name

Scope = Literal["read", "push"]
_VARIABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: Shorter tokens are refused: a bearer token is only as strong as its length.
MIN_TOKEN_LENGTH = 16


class TokenConfig(BaseModel):
    """One caller: the variable holding its token, the patterns and scopes it may use."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    env: str = Field(description="environment variable that holds the token")
    patterns: list[Name | Literal["*"]] = Field(min_length=1)
    scopes: list[Scope] = Field(default=["read"], min_length=1)

    @field_validator("env")
    @classmethod
    def _a_variable_name(cls, value: str) -> str:
        if not _VARIABLE.match(value):
            raise ValueError(
                "must name an environment variable (letters, digits, '_'), not hold the token"
            )
        return value

    def allows(self, pattern: str, scope: Scope) -> bool:
        return scope in self.scopes and ("*" in self.patterns or pattern in self.patterns)


class ServeConfig(BaseModel):
    """The ``serve`` block; every key has a default, so a registry may leave it out."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tokens: dict[Name, TokenConfig] = Field(default_factory=dict)
    max_entities: int = Field(default=1000, ge=1, le=100_000)
    max_body_bytes: int = Field(default=1 << 20, ge=1024, le=1 << 30)

    def secrets(self, file: str) -> dict[str, bytes]:
        """Each token's name and value, read from the environment now; every unset or too
        short one is named at once."""
        found: dict[str, bytes] = {}
        problems = []
        for name, token in self.tokens.items():
            value = os.environ.get(token.env, "")
            if len(value) < MIN_TOKEN_LENGTH:
                state = "is not set" if not value else f"is shorter than {MIN_TOKEN_LENGTH}"
                problems.append(f"{token.env} (token '{name}') {state}")
            found[name] = value.encode()
        if problems:
            raise ConfigError(
                f"serve: {'; '.join(problems)}; set each to a random secret, e.g. "
                "$(python -c 'import secrets; print(secrets.token_urlsafe(32))')",
                file=file,
                path=("serve", "tokens"),
            )
        return found
