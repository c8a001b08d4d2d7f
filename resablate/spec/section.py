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
    # How a trial is run, not what it computes (e.g. how often it checkpoints): never written
    # out, so never in a trial's config, its id or the spec's hash (changing one resumes a
    # sweep as it is); the runner reads them from the sweep's own section.
    UNHASHED: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _drop_later_defaults(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        out = handler(self)
        for name in self.UNHASHED:
            out.pop(name, None)
        for name in self.LATER:
            if name in out and out[name] == type(self).model_fields[name].default:
                del out[name]
        return out
