"""Local webhook tooling behind `sophon webhooks`: the receiver of `listen` (``receiver``) and the
store of signing secrets (``secret_store``). The API calls themselves are in
``sophon_cli.client.webhooks``. Never imports the CLI."""
