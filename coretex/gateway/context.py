"""What ``create_app`` hands to the routes: this process's :class:`~coretex.services.Services`."""

from __future__ import annotations

from typing import cast

from flask import Flask, current_app

from coretex.services import Services

_EXTENSION = "coretex.services"


def install_services(app: Flask, services: Services) -> None:
    app.extensions[_EXTENSION] = services


def current_services() -> Services:
    return cast(Services, current_app.extensions[_EXTENSION])
