"""Dependencies injected into routes (the loaded model lives on app.state, set by the lifespan)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request

from serving.model_source import LoadedModel
from serving.settings import ServingSettings


def get_model(request: Request) -> LoadedModel:
    """The currently loaded model; 503 while none is."""
    model = getattr(request.app.state, "model", None)
    if model is None:
        raise HTTPException(status_code=503, detail="no model loaded yet")
    return model


def get_settings(request: Request) -> ServingSettings:
    """The app's settings."""
    return request.app.state.settings


ModelDep = Annotated[LoadedModel, Depends(get_model)]
SettingsDep = Annotated[ServingSettings, Depends(get_settings)]
