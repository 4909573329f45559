"""Immutable records returned by the store."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class User:
    id: int
    name: str
    state: str  # 'online' | 'offline'


@dataclass(frozen=True, slots=True)
class GroupMember:
    id: int
    name: str
    state: str  # 'online' | 'offline'
    role: str  # 'creator' | 'normal'


@dataclass(frozen=True, slots=True)
class Group:
    id: int
    name: str
    desc: str
    members: tuple[GroupMember, ...]
