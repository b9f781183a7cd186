"""Teams and their members (roles `admin` and `member`).

Access is looked up per request (`access`): a user who is not a member of a team gets
404 for it and everything under it, exactly as for a team that does not exist, so team
ids cannot be probed. Changes to the membership lock the team's row, so that two
concurrent demotions or removals can never leave a team without an admin.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from coro.cloud.db import AnyRow, Database
from coro.cloud.errors import Conflict, Forbidden, NotFound
from coro.cloud.schema import team_members, teams, users

Role = Literal["admin", "member"]

TEAM_NOT_FOUND = "Team not found"
SLUG_TAKEN = "Team slug already taken"
LAST_ADMIN = "A team needs at least one admin: make another member admin first"


@dataclass(frozen=True)
class Team:
    id: str
    name: str
    slug: str
    created_at: datetime
    updated_at: datetime
    role: Role  # the caller's


@dataclass(frozen=True)
class Member:
    user_id: str
    email: str
    name: str
    role: Role
    joined_at: datetime


@dataclass(frozen=True)
class TeamAccess:
    """A user's standing in a team, read from the database for this request."""

    team_id: str
    user_id: str
    role: Role

    def require_admin(self, action: str) -> None:
        if self.role != "admin":
            raise Forbidden(f"Only team admins can {action}")


_TEAM_COLUMNS = (teams.c.id, teams.c.name, teams.c.slug, teams.c.created_at, teams.c.updated_at)
_MEMBER_COLUMNS = (
    team_members.c.user_id,
    users.c.email,
    users.c.name,
    team_members.c.role,
    team_members.c.joined_at,
)


def _team(row: AnyRow, role: Role) -> Team:
    return Team(row.id, row.name, row.slug, row.created_at, row.updated_at, role)


def _member(row: AnyRow) -> Member:
    return Member(row.user_id, row.email, row.name, row.role, row.joined_at)


def _slug_taken(exc: IntegrityError) -> bool:
    return "teams_slug_key" in str(exc.orig)


class Teams:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, user_id: str, name: str, slug: str) -> Team:
        async with self.db.begin() as connection:
            row = (
                await connection.execute(
                    insert(teams)
                    .values(id=str(uuid.uuid4()), name=name, slug=slug)
                    .on_conflict_do_nothing(index_elements=[teams.c.slug])
                    .returning(*_TEAM_COLUMNS)
                )
            ).first()
            if row is None:
                raise Conflict(SLUG_TAKEN)
            await connection.execute(
                team_members.insert().values(team_id=row.id, user_id=user_id, role="admin")
            )
        return _team(row, "admin")

    async def list_for(self, user_id: str) -> list[Team]:
        async with self.db.begin() as connection:
            rows = await connection.execute(
                select(*_TEAM_COLUMNS, team_members.c.role)
                .join(team_members, team_members.c.team_id == teams.c.id)
                .where(team_members.c.user_id == user_id)
                .order_by(teams.c.created_at, teams.c.id)
            )
        return [_team(row, row.role) for row in rows]

    async def access(self, user_id: str, team_id: str) -> TeamAccess:
        async with self.db.begin() as connection:
            role = (
                await connection.execute(
                    select(team_members.c.role).where(
                        team_members.c.team_id == team_id, team_members.c.user_id == user_id
                    )
                )
            ).scalar_one_or_none()
        if role is None:
            raise NotFound(TEAM_NOT_FOUND)
        return TeamAccess(team_id=team_id, user_id=user_id, role=role)

    async def get(self, access: TeamAccess) -> tuple[Team, list[Member]]:
        async with self.db.begin() as connection:
            row = (
                await connection.execute(select(*_TEAM_COLUMNS).where(teams.c.id == access.team_id))
            ).first()
            if row is None:
                raise NotFound(TEAM_NOT_FOUND)
            members = await connection.execute(
                select(*_MEMBER_COLUMNS)
                .join(users, users.c.id == team_members.c.user_id)
                .where(team_members.c.team_id == access.team_id)
                .order_by(team_members.c.joined_at, team_members.c.user_id)
            )
            return _team(row, access.role), [_member(m) for m in members]

    async def update(
        self, access: TeamAccess, *, name: str | None = None, slug: str | None = None
    ) -> Team:
        access.require_admin("change the team")
        values: dict[str, Any] = {"updated_at": func.now()}
        if name is not None:
            values["name"] = name
        if slug is not None:
            values["slug"] = slug
        try:
            async with self.db.begin() as connection:
                row = (
                    await connection.execute(
                        update(teams)
                        .where(teams.c.id == access.team_id)
                        .values(**values)
                        .returning(*_TEAM_COLUMNS)
                    )
                ).first()
        except IntegrityError as exc:
            if _slug_taken(exc):
                raise Conflict(SLUG_TAKEN) from None
            raise
        if row is None:
            raise NotFound(TEAM_NOT_FOUND)
        return _team(row, access.role)

    # ------------------------------------------------------------------ members

    async def add_member(self, access: TeamAccess, email: str, role: Role) -> Member:
        access.require_admin("add members")
        async with self.db.begin() as connection:
            user_id = (
                await connection.execute(select(users.c.id).where(users.c.email == email))
            ).scalar_one_or_none()
            if user_id is None:
                raise NotFound("No user with that email: they must sign up first")
            added = (
                await connection.execute(
                    insert(team_members)
                    .values(team_id=access.team_id, user_id=user_id, role=role)
                    .on_conflict_do_nothing()
                    .returning(team_members.c.user_id)
                )
            ).first()
            if added is None:
                raise Conflict("User is already a member")
            return await self._member(connection, access.team_id, user_id)

    async def set_role(self, access: TeamAccess, user_id: str, role: Role) -> Member:
        access.require_admin("change roles")
        async with self.db.begin() as connection:
            current = await self._locked_role(connection, access.team_id, user_id)
            if current == "admin" and role != "admin":
                await self._keep_an_admin(connection, access.team_id)
            await connection.execute(
                update(team_members)
                .where(team_members.c.team_id == access.team_id, team_members.c.user_id == user_id)
                .values(role=role)
            )
            return await self._member(connection, access.team_id, user_id)

    async def remove_member(self, access: TeamAccess, user_id: str) -> None:
        """Admins remove anyone; a member may remove only themselves (leave)."""
        if user_id != access.user_id:
            access.require_admin("remove other members")
        async with self.db.begin() as connection:
            current = await self._locked_role(connection, access.team_id, user_id)
            if current == "admin":
                await self._keep_an_admin(connection, access.team_id)
            await connection.execute(
                team_members.delete().where(
                    team_members.c.team_id == access.team_id, team_members.c.user_id == user_id
                )
            )

    async def _locked_role(self, connection: AsyncConnection, team_id: str, user_id: str) -> Role:
        """The member's role, with the team locked against concurrent membership changes."""
        await connection.execute(select(teams.c.id).where(teams.c.id == team_id).with_for_update())
        role: Role | None = (
            await connection.execute(
                select(team_members.c.role).where(
                    team_members.c.team_id == team_id, team_members.c.user_id == user_id
                )
            )
        ).scalar_one_or_none()
        if role is None:
            raise NotFound("Member not found")
        return role

    async def _keep_an_admin(self, connection: AsyncConnection, team_id: str) -> None:
        """Refuse to take away an admin when they are the team's last one."""
        admins = (
            await connection.execute(
                select(func.count()).where(
                    team_members.c.team_id == team_id, team_members.c.role == "admin"
                )
            )
        ).scalar_one()
        if admins <= 1:
            raise Conflict(LAST_ADMIN)

    async def _member(self, connection: AsyncConnection, team_id: str, user_id: str) -> Member:
        row = (
            await connection.execute(
                select(*_MEMBER_COLUMNS)
                .join(users, users.c.id == team_members.c.user_id)
                .where(team_members.c.team_id == team_id, team_members.c.user_id == user_id)
            )
        ).one()
        return _member(row)
