"""Options shared by the commands that create jobs (`job create`, `encode`): one definition each."""

from __future__ import annotations

from typing import Annotated

import typer

Profile = Annotated[
    str, typer.Option("--profile", metavar="PROFILE", help="Encoding profile (the server validates it).")
]
Container = Annotated[
    str | None,
    typer.Option("--container", metavar="mp4|mkv", help="Output container [server default: mp4]."),
]
Audio = Annotated[
    bool | None, typer.Option("--audio/--no-audio", help="Keep the source audio [server default: no].")
]
Height = Annotated[
    int | None, typer.Option("--height", metavar="N", help="Downscale to this height (144-4320).")
]
Webhooks = Annotated[
    list[str] | None,
    typer.Option("--webhook", metavar="WEBHOOK_ID", help="Notify this webhook (repeatable)."),
]
Metadata = Annotated[
    list[str] | None,
    typer.Option("--metadata", metavar="KEY=VALUE", help="Attach metadata; VALUE may be JSON (repeatable)."),
]
