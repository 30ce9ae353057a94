"""``stageflow config compose ENV`` and ``stageflow config nginx [ENV]``.

Registered on the ``config`` group by :func:`register`. Only Typer is imported at module level:
Jinja2, PyYAML and pydantic load when a command runs, not when the CLI starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from stageflow.cli.common import RootOpt

if TYPE_CHECKING:
    from stageflow.config.models import ProjectConfig

OutputOpt = Annotated[
    Optional[Path],  # noqa: UP045
    typer.Option("--output", "-o", help="Directory to write into (default: see the command's help)."),
]


def register(app: typer.Typer) -> None:
    """Add the ``compose`` and ``nginx`` commands to the ``config`` group."""
    app.command("compose")(compose_command)
    app.command("nginx")(nginx_command)


def _load(root: Path | None) -> tuple[Path, ProjectConfig]:
    from stageflow.cli.common import project_root
    from stageflow.config.loader import load_project

    resolved = project_root(root)
    return resolved, load_project(resolved)


def _say(text: str) -> None:
    from stageflow.cli.common import console

    # Plain text: paths may hold brackets that Rich would read as markup.
    from stageflow.masking import shown

    console().print(shown(text), markup=False)


def _show(path: Path, base: Path) -> str:
    try:
        return str(path.relative_to(base))
    except ValueError:
        return str(path)


def compose_command(
    env: Annotated[str, typer.Argument(help="Environment name or alias, e.g. production or prod.")],
    root: RootOpt = None,
    output: OutputOpt = None,
) -> None:
    """Write docker-compose.<env>.yml (docker-compose.prod.yml for production) into the app root or --output."""
    from stageflow.config.loader import resolve_env_name
    from stageflow.generate.compose import is_dev, write_compose

    app_root, config = _load(root)
    name = resolve_env_name(config, env)
    out_dir = output.resolve() if output else app_root
    path = write_compose(config, name, root=app_root, out_dir=out_dir)
    _say(f"wrote {_show(path, Path.cwd())} ({name}: {', '.join(_services_summary(config, name))})")
    nginx_dir = app_root / "deploy" / "nginx" / name
    if not is_dev(config, name) and not nginx_dir.is_dir():
        _say(f"next: `stageflow config nginx {name}` writes the proxy config it mounts ({nginx_dir})")


def _services_summary(config: ProjectConfig, env: str) -> list[str]:
    from stageflow.generate.compose import is_dev

    web_name, _ = config.web_service
    names = [
        f"{n}×{config.environments[env].replicas}" if n == web_name and config.environments[env].replicas > 1 else n
        for n in config.services
    ]
    if config.database_for(env).engine == "postgres":
        names.append("db")
    if config.cache is not None and config.cache.engine == "redis":
        names.append("redis")
    if not is_dev(config, env):
        names.append("nginx")
    return names


def _nginx_version(config: ProjectConfig, env: str) -> tuple[int, int, int] | None:
    """The nginx version the config is for: the compose image's tag, or the local binary's ``-v``."""
    from stageflow.generate.compose import DEFAULT_IMAGES, image_overrides
    from stageflow.generate.nginx import parse_nginx_version

    if config.environments[env].runtime == "compose":
        image = image_overrides(config, env).get("nginx", DEFAULT_IMAGES["nginx"])
        return parse_nginx_version(image.rsplit(":", 1)[-1]) if ":" in image else None
    from stageflow.errors import OperationError
    from stageflow.runner import Runner

    try:
        result = Runner().run([config.nginx.binary, "-v"], timeout=10)
    except OperationError:
        return None  # not installed here: assume a current nginx
    return parse_nginx_version(result.stderr) if result.ok else None


def nginx_command(
    env: Annotated[
        Optional[str],  # noqa: UP045
        typer.Argument(help="Environment name or alias (default: production, or the last promotion step)."),
    ] = None,
    all_envs: Annotated[bool, typer.Option("--all", help="Generate every environment.")] = False,
    root: RootOpt = None,
    output: OutputOpt = None,
) -> None:
    """Write the nginx reverse proxy of an environment into deploy/nginx/<env>/ (or --output/<env>/)."""
    from stageflow.config.loader import resolve_env_name
    from stageflow.errors import UsageError
    from stageflow.generate.nginx import default_upstream_servers, site_options, write_site

    app_root, config = _load(root)
    if all_envs and env:
        raise UsageError("give an environment or --all, not both", hint="e.g. `stageflow config nginx staging`")
    if all_envs:
        names = list(config.environments)
    elif env:
        names = [resolve_env_name(config, env)]
    else:
        prod = [n for n in config.environments if config.is_production(n)]
        names = [prod[0] if prod else config.promotion_order[-1]]
    base = output.resolve() if output else app_root / "deploy" / "nginx"
    for name in names:
        opts = site_options(config, name, root=app_root, nginx_version=_nginx_version(config, name))
        site = write_site(app_root, opts, base / name, default_upstream_servers(config, name))
        files = ", ".join(p.name for p in site.files)
        _say(f"wrote {_show(site.directory, Path.cwd())}/ ({files})")
        if site.basic_auth is not None:
            auth = site.basic_auth
            state = "new password" if auth.created else "existing password"
            _say(
                f"basic auth for {name}: user {auth.user!r}, {state} stored in "
                f"{_show(auth.password_file, Path.cwd())} (mode 0600)"
            )
        if opts.tls:
            _say(f"certificate expected at {opts.cert} and {opts.key}; install the directory as {opts.include_dir}")
