"""The bare FastAPI "hello" the service's HTTP ceiling is compared with."""

from __future__ import annotations

from fastapi import FastAPI

app = FastAPI()


@app.get("/")
async def hello() -> dict[str, str]:
    return {"hello": "world"}
