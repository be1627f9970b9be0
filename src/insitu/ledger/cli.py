"""Ledger commands: checkpoint, verify, export, witnesses (host), and ``witness`` (a partner)."""

from __future__ import annotations

import base64
import json
import os
import shutil
from pathlib import Path
from typing import Annotated

import httpx
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from insitu.cli.common import api_url, emit_json, fail, local_platform, stderr
from insitu.core.platform import Platform
from insitu.db import session_scope
from insitu.ledger import service, verifier
from insitu.ledger.keys import LogSigner, MissingKeyError, load_log_signer
from insitu.ledger.verifier import Checkpoint, VerificationError
from insitu.ledger.witness import ForkDetectedError, WitnessError, WitnessState, witness_once

ledger_app = typer.Typer(
    help="The tamper-evident ledger: checkpoints, verification, export, witnesses.",
    no_args_is_help=True,
)
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _signer(platform: Platform) -> LogSigner:
    try:
        return load_log_signer(platform.settings)
    except MissingKeyError as exc:
        fail(str(exc))


@ledger_app.command("checkpoint")
def checkpoint(json_output: JsonFlag = False) -> None:
    """Sign the current log (C2SP tlog-checkpoint, Ed25519) and print the signed note."""
    with local_platform() as platform:
        signer = _signer(platform)
        with session_scope(platform.sessions) as session:
            row = service.create_checkpoint(session, signer)
            note, size = row.note, row.tree_size
    if json_output:
        emit_json({"size": size, "note": note})
    else:
        typer.echo(note, nl=False)


@ledger_app.command("verify")
def verify(
    checkpoint_files: Annotated[
        list[Path] | None,
        typer.Option(
            "--checkpoint",
            help="A checkpoint kept outside the platform (repeat): the log must still hold "
            "exactly what it covered.",
        ),
    ] = None,
    json_output: JsonFlag = False,
) -> None:
    """Recompute the whole tree from the stored entries and check every signed checkpoint.

    Exits 1 and says where when an entry was edited, deleted, reordered or inserted, or a
    checkpoint is forged.
    """
    outside = []
    for path in checkpoint_files or []:
        try:
            outside.append(path.read_text())
        except (OSError, UnicodeDecodeError) as exc:
            fail(f"cannot read checkpoint file {path}: {exc}")
    with local_platform() as platform:
        key = _signer(platform).parsed_key
        with session_scope(platform.sessions) as session:
            total = service.tree_size(session)
            progress = Progress(
                TextColumn("verify"),
                BarColumn(),
                MofNCompleteColumn(),
                console=stderr,
                disable=json_output,
            )
            with progress:
                task = progress.add_task("verify", total=total)
                report = service.verify(
                    session, key, outside, on_progress=lambda n: progress.advance(task, n)
                )
                progress.update(task, completed=total)
    if json_output:
        emit_json(
            {
                "ok": report.ok,
                "entries": report.entries,
                "checkpoints": report.checkpoints,
                "problems": report.problems,
                "seconds": round(report.seconds, 3),
            }
        )
    else:
        for problem in report.problems:
            stderr.print(f"[red]problem[/red] {problem}")
        verdict = "OK" if report.ok else "FAILED"
        typer.echo(
            f"{verdict}: {report.entries} entries, {report.checkpoints} signed checkpoints "
            f"checked in {report.seconds:.2f} s"
        )
    if not report.ok:
        raise typer.Exit(1)


@ledger_app.command("export")
def export(
    output: Annotated[Path, typer.Argument(help="The bundle file to write (JSON).")],
    verifier_script: Annotated[
        Path | None,
        typer.Option("--verifier", help="Also write the stand-alone verifier script here."),
    ] = None,
) -> None:
    """Write entries, signed checkpoints and public keys to one file for offline audit.

    Check it anywhere with only Python and `cryptography`: python verifier.py BUNDLE --key VKEY
    """
    with local_platform() as platform:
        signer = _signer(platform)
        with session_scope(platform.sessions) as session:
            bundle = service.export_bundle(session, signer)
    temporary = output.with_name(output.name + ".tmp")
    with temporary.open("w", encoding="utf-8") as handle:
        json.dump(bundle, handle, ensure_ascii=False, separators=(",", ":"))
        handle.flush()
        os.fsync(handle.fileno())
    temporary.replace(output)
    if verifier_script is not None:
        shutil.copyfile(verifier.__file__, verifier_script)
    stderr.print(
        f"wrote {len(bundle['entries'])} entries and {len(bundle['checkpoints'])} checkpoints "
        f"to {output}; log key {signer.verifier_key}"
    )


@ledger_app.command("key")
def key() -> None:
    """Print the log's public verifier key (publish it where auditors can find it)."""
    with local_platform() as platform:
        typer.echo(_signer(platform).verifier_key)


@ledger_app.command("add-witness")
def add_witness(
    witness_key: Annotated[str, typer.Argument(help="The witness's key, as it printed it.")],
) -> None:
    """Register a partner's witness key: its cosignatures are accepted from then on."""
    with local_platform() as platform:
        try:
            with session_scope(platform.sessions) as session:
                witness = service.register_witness(session, witness_key, service.HOST_ACTOR)
                name = witness.name
        except (ValueError, verifier.VerificationError) as exc:
            fail(f"cannot register witness key: {exc}")
    typer.echo(f"registered witness {name}")


@ledger_app.command("witnesses")
def list_witnesses(json_output: JsonFlag = False) -> None:
    """List the registered witnesses and their keys."""
    with local_platform() as platform, session_scope(platform.sessions) as session:
        rows = [{"name": w.name, "key": w.verifier_key} for w in service.witnesses(session)]
    if json_output:
        emit_json(rows)
    else:
        for row in rows:
            typer.echo(f"{row['name']}  {row['key']}")


@ledger_app.command("witness")
def witness(
    url: Annotated[str, typer.Argument(help="The insitu platform, e.g. https://insitu.example")],
    state: Annotated[
        Path, typer.Option(help="Folder for this witness's key and the checkpoints it saw.")
    ] = Path("insitu-witness"),
    name: Annotated[
        str, typer.Option(help="This witness's name (a schema-less URL of your organisation).")
    ] = "witness.example/insitu",
    log_key: Annotated[
        str | None,
        typer.Option(help="The log's verifier key, obtained independently (else: first use)."),
    ] = None,
) -> None:
    """Witness a platform's ledger: check its newest checkpoint extends the last one seen,
    keep it and cosign it. Exits 2 on a fork (evidence kept in --state), 1 on other errors."""
    state.mkdir(parents=True, exist_ok=True)
    witness_state = WitnessState(state, name)
    try:
        result = witness_once(url, witness_state, log_key)
    except ForkDetectedError as exc:
        fail(str(exc), code=2)
    except (WitnessError, verifier.VerificationError) as exc:
        fail(str(exc))
    before = "first checkpoint" if result.previous_size is None else f"from {result.previous_size}"
    typer.echo(f"{result.message} ({before}); witness key {witness_state.verifier_key()}")
    if not result.accepted:
        raise typer.Exit(1)


proof_app = typer.Typer(
    help="Check proofs from a running insitu server against its signed checkpoint (client).",
    no_args_is_help=True,
)
ledger_app.add_typer(proof_app, name="proof")
LogKeyOption = Annotated[
    str | None,
    typer.Option(
        "--log-key",
        help="The log's verifier key, obtained independently (default: ask the server).",
    ),
]


def _fetch(path: str, **params: int) -> httpx.Response:
    url = f"{api_url()}/api/v1/ledger{path}"
    try:
        response = httpx.get(url, params=params, timeout=60)
    except httpx.HTTPError as exc:
        fail(f"cannot reach {url} ({exc}); set INSITU_URL")
    if response.status_code != 200:
        fail(f"{url}: {response.status_code} {response.text[:200]}")
    return response


def _latest(log_key: str | None) -> tuple[verifier.VerifierKey, Checkpoint]:
    if log_key is None:
        stderr.print("[yellow]note[/yellow] trusting the server's own key; pin it with --log-key")
    try:
        key = verifier.parse_verifier_key(log_key or _fetch("/key").text)
        latest, _ = verifier.open_checkpoint(_fetch("/checkpoint").text, key)
    except VerificationError as exc:
        fail(f"the server's checkpoint does not verify: {exc}")
    return key, latest


@proof_app.command("inclusion")
def proof_inclusion(
    index: Annotated[int, typer.Argument(min=0, help="The entry's leaf index.")],
    entry_file: Annotated[
        Path | None,
        typer.Option(
            "--entry", help="The entry as JSON (from /ledger/entries): hash it here, not there."
        ),
    ] = None,
    log_key: LogKeyOption = None,
    json_output: JsonFlag = False,
) -> None:
    """Prove that entry INDEX is in the server's newest signed checkpoint."""
    _, latest = _latest(log_key)
    if index >= latest.size:
        fail(f"entry {index} is not covered by the newest checkpoint (size {latest.size})")
    answer = _fetch("/proof/inclusion", index=index, size=latest.size).json()
    leaf = base64.b64decode(answer["leaf_hash"])
    if entry_file is not None:
        try:
            entry = json.loads(entry_file.read_text())
            leaf = verifier.leaf_hash(
                verifier.entry_leaf(
                    entry["index"],
                    entry["time"],
                    entry["type"],
                    entry["actor"],
                    entry["subject"],
                    verifier.canonical_json(entry["payload"]),
                )
            )
        except (OSError, ValueError, KeyError) as exc:
            fail(f"cannot read entry file {entry_file}: {exc}")
    try:
        proof = [base64.b64decode(p) for p in answer["proof"]]
        verifier.verify_inclusion(index, latest.size, leaf, proof, latest.root)
    except VerificationError as exc:
        fail(f"inclusion proof FAILED: {exc}")
    if json_output:
        emit_json({"ok": True, "index": index, "size": latest.size})
    else:
        typer.echo(f"OK: entry {index} is in the signed log of size {latest.size}")


@proof_app.command("consistency")
def proof_consistency(
    checkpoint_file: Annotated[Path, typer.Argument(help="A checkpoint you kept earlier.")],
    log_key: LogKeyOption = None,
    json_output: JsonFlag = False,
) -> None:
    """Prove that the server's newest checkpoint extends one you kept (nothing was rewritten)."""
    key, latest = _latest(log_key)
    try:
        old, _ = verifier.open_checkpoint(checkpoint_file.read_text(), key)
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read checkpoint file {checkpoint_file}: {exc}")
    except VerificationError as exc:
        fail(f"{checkpoint_file}: {exc}")

    def fetch_proof() -> list[bytes]:
        answer = _fetch("/proof/consistency", old=old.size, new=latest.size).json()
        return [base64.b64decode(p) for p in answer["proof"]]

    try:
        verifier.verify_extends(old, latest, fetch_proof)
    except VerificationError as exc:
        fail(f"consistency proof FAILED: {exc}")
    if json_output:
        emit_json({"ok": True, "old": old.size, "new": latest.size})
    else:
        typer.echo(f"OK: the log of size {latest.size} extends your checkpoint of size {old.size}")
