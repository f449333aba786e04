"""The FastAPI service: settings, app factory with lifespan, dependencies, routes, schemas."""
