"""The naive baseline: what a typical Python developer writes for the same API.

FastAPI + pydantic models for the six Segment call types and the batch envelope, one SQLite
transaction committed per request (WAL, synchronous=FULL, so a 200 is as durable as trackd's).
Endpoints are plain `def` functions, so FastAPI runs them in its thread pool, and each thread
keeps its own SQLite connection. It validates the same basic rules (type, userId or
anonymousId, event name, ISO timestamps) but has none of trackd's machinery: no group commit,
no quarantine, no size limits, no back-pressure.

Run: uvicorn app:app --workers N   (BASELINE_DB=path/to/events.db, BASELINE_WRITE_KEY=key)
This directory is excluded from the project's ruff config on purpose: it is reference code.
"""

import base64
import os
import sqlite3
import threading
from datetime import datetime, timezone
from typing import Annotated, Any, Literal, Optional, Union

from fastapi import FastAPI, Header, HTTPException
from pydantic import BaseModel, ConfigDict, Field, model_validator

DB_PATH = os.environ.get("BASELINE_DB", "events.db")
WRITE_KEY = os.environ.get("BASELINE_WRITE_KEY", "wk_bench")

app = FastAPI(title="naive tracking API")
_local = threading.local()


def get_conn() -> sqlite3.Connection:
    conn = getattr(_local, "conn", None)
    if conn is None:
        conn = sqlite3.connect(DB_PATH, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, received_at TEXT, "
            "message_id TEXT, type TEXT, event TEXT, user_id TEXT, anonymous_id TEXT, body TEXT)"
        )
        conn.commit()
        _local.conn = conn
    return conn


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")

    userId: Optional[str] = Field(default=None, max_length=255)
    anonymousId: Optional[str] = Field(default=None, max_length=255)
    messageId: Optional[str] = Field(default=None, max_length=100)
    timestamp: Optional[datetime] = None
    sentAt: Optional[datetime] = None
    context: dict[str, Any] = {}
    integrations: dict[str, Any] = {}
    writeKey: Optional[str] = None

    @model_validator(mode="after")
    def check_ids(self):
        if not self.userId and not self.anonymousId:
            raise ValueError("userId or anonymousId is required")
        return self


class Track(Message):
    type: Literal["track"] = "track"
    event: str = Field(min_length=1, max_length=200)
    properties: dict[str, Any] = {}


class Identify(Message):
    type: Literal["identify"] = "identify"
    traits: dict[str, Any] = {}


class Page(Message):
    type: Literal["page"] = "page"
    name: Optional[str] = None
    properties: dict[str, Any] = {}


class Screen(Message):
    type: Literal["screen"] = "screen"
    name: Optional[str] = None
    properties: dict[str, Any] = {}


class Group(Message):
    type: Literal["group"] = "group"
    groupId: str = Field(min_length=1, max_length=255)
    traits: dict[str, Any] = {}


class Alias(Message):
    type: Literal["alias"] = "alias"
    previousId: str = Field(min_length=1, max_length=255)


AnyMessage = Annotated[
    Union[Track, Identify, Page, Screen, Group, Alias], Field(discriminator="type")
]


class Batch(BaseModel):
    batch: list[AnyMessage] = Field(max_length=2500)
    sentAt: Optional[datetime] = None
    context: dict[str, Any] = {}
    writeKey: Optional[str] = None


def check_write_key(authorization: Optional[str], body_key: Optional[str]) -> None:
    key = body_key
    if not key and authorization and authorization.lower().startswith("basic "):
        key = base64.b64decode(authorization[6:]).decode().split(":")[0]
    if key != WRITE_KEY:
        raise HTTPException(status_code=401, detail="Invalid write key")


def save(messages: list[Message]) -> None:
    now = datetime.now(timezone.utc).isoformat()
    conn = get_conn()
    conn.executemany(
        "INSERT INTO events (received_at, message_id, type, event, user_id, anonymous_id, body) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            (now, m.messageId, m.type, getattr(m, "event", None), m.userId, m.anonymousId,
             m.model_dump_json(exclude={"writeKey"}))
            for m in messages
        ],
    )
    conn.commit()


@app.post("/v1/track")
def track(msg: Track, authorization: Optional[str] = Header(default=None)):
    check_write_key(authorization, msg.writeKey)
    save([msg])
    return {"success": True}


@app.post("/v1/identify")
def identify(msg: Identify, authorization: Optional[str] = Header(default=None)):
    check_write_key(authorization, msg.writeKey)
    save([msg])
    return {"success": True}


@app.post("/v1/page")
def page(msg: Page, authorization: Optional[str] = Header(default=None)):
    check_write_key(authorization, msg.writeKey)
    save([msg])
    return {"success": True}


@app.post("/v1/screen")
def screen(msg: Screen, authorization: Optional[str] = Header(default=None)):
    check_write_key(authorization, msg.writeKey)
    save([msg])
    return {"success": True}


@app.post("/v1/group")
def group(msg: Group, authorization: Optional[str] = Header(default=None)):
    check_write_key(authorization, msg.writeKey)
    save([msg])
    return {"success": True}


@app.post("/v1/alias")
def alias(msg: Alias, authorization: Optional[str] = Header(default=None)):
    check_write_key(authorization, msg.writeKey)
    save([msg])
    return {"success": True}


@app.post("/v1/batch")
def batch(body: Batch, authorization: Optional[str] = Header(default=None)):
    check_write_key(authorization, body.writeKey)
    save(list(body.batch))
    return {"success": True}
