"""Load the packaged SDL and build an executable schema from it."""

from __future__ import annotations

from functools import cache
from importlib import resources

from graphql import GraphQLSchema, build_schema

from ._scalars import install_scalars


@cache
def schema_sdl() -> str:
    """The schema text shipped with the package (snapshot A plus additions)."""
    return resources.files("meshsub_trio.meshery").joinpath("schema.graphql").read_text("utf-8")


def build_meshery_schema() -> GraphQLSchema:
    """A fresh schema per app: the App attaches resolvers to its field objects."""
    schema = build_schema(schema_sdl())
    install_scalars(schema)
    return schema
