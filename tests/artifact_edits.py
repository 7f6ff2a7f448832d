"""Test helpers: export a checkpoint once per module, and edit a zip (an artifact, a checkpoint) member by
member, as a hostile editor would."""
import io
import json
import zipfile


def rezip(src: bytes, edit) -> bytes:
    """Rewrite a zip member by member (correct CRCs): edit(name, data) -> (name, data) or None to drop."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(src)) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            item = edit(info.filename, zin.read(info))
            if item is not None:
                zout.writestr(item[0], item[1])
    return out.getvalue()


def edit_manifest(src: bytes, fn) -> bytes:
    """The artifact with ``fn(manifest)`` applied to its parsed manifest."""
    def edit(name, data):
        if name == "manifest.json":
            m = json.loads(data)
            fn(m)
            return name, json.dumps(m).encode()
        return name, data
    return rezip(src, edit)


def exported(tmp_path_factory, checkpoint: str):
    """``checkpoint`` exported by the real CLI into a fresh folder; -> the artifact's path."""
    from neurocompile.cli import main as cli

    out = tmp_path_factory.mktemp("art") / "exported.loihi2"
    assert cli(["export", checkpoint, "-o", str(out)]) == 0
    return out
