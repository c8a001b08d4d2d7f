"""The base classes of a sweep file's sections: frozen, and an unknown key is an error."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, SerializerFunctionWrapHandler, model_serializer


class Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Grown(Section):
    """A section with fields added after sweeps were run (``LATER``). A trial's id hashes its
    resolved config, so these appear in it only when set: every earlier trial keeps its id (and
    its sweep resumes) whatever the version that runs it."""

    LATER: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _drop_later_defaults(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        out = handler(self)
        for name in self.LATER:
            if name in out and out[name] == type(self).model_fields[name].default:
                del out[name]
        return out
