"""Documents to text, and sidecar metadata: every supported type built here, offline."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from outcrop.knowledge.metadata import is_sidecar, read_sidecar, sidecar_for
from outcrop.knowledge.parsing import SUPPORTED_SUFFIXES, DocumentParseError, parse_document


def make_pdf(lines: list[str]) -> bytes:
    """A minimal valid one-page PDF with a Helvetica text layer, offsets computed."""
    ops = ["BT", "/F1 12 Tf", "72 720 Td", "14 TL"]
    for line in lines:
        escaped = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
        ops.append(f"({escaped}) Tj T*")
    ops.append("ET")
    stream = "\n".join(ops).encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % i + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for off in offsets:
        out.write(b"%010d 00000 n \n" % off)
    out.write(b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref))
    return out.getvalue()


def test_supported_suffixes() -> None:
    assert {".txt", ".md", ".html", ".csv", ".pdf", ".docx"} <= SUPPORTED_SUFFIXES


def test_txt_and_md(tmp_path: Path) -> None:
    p = tmp_path / "a.txt"
    p.write_bytes("\ufeffHello wörld\r\n\r\n\r\n\r\nSecond   \n".encode())
    doc = parse_document(p)
    assert doc.text == "Hello wörld\n\nSecond"
    assert doc.content_type == "text/plain"
    m = tmp_path / "b.md"
    m.write_text("# Title\n\n- item one\n- item two\n")
    doc = parse_document(m)
    assert doc.text.startswith("# Title") and doc.content_type == "text/markdown"


def test_cp1252_text(tmp_path: Path) -> None:
    p = tmp_path / "w.txt"
    p.write_bytes("caf\u00e9 na\u00efve".encode("cp1252"))
    assert parse_document(p).text == "café naïve"


def test_html_drops_scripts(tmp_path: Path) -> None:
    p = tmp_path / "page.html"
    p.write_text(
        "<html><head><title>Rocks</title><style>p{color:red}</style></head>"
        "<body><h1>Granite</h1><script>alert('x')</script><p>An igneous <b>rock</b>.</p></body></html>"
    )
    doc = parse_document(p)
    assert "Granite" in doc.text and "igneous" in doc.text and "rock" in doc.text
    assert "alert" not in doc.text and "color" not in doc.text
    assert doc.text.startswith("Rocks")
    assert doc.content_type == "text/html"


def test_csv_rows_keep_headers(tmp_path: Path) -> None:
    p = tmp_path / "t.csv"
    p.write_text('name,hardness\nquartz,7\n"talc, soft",1\n')
    doc = parse_document(p)
    assert doc.text.splitlines() == ["name: quartz; hardness: 7", "name: talc, soft; hardness: 1"]


def test_pdf(tmp_path: Path) -> None:
    p = tmp_path / "doc.pdf"
    p.write_bytes(make_pdf(["Basalt is a volcanic rock.", "It cools quickly (fine grained)."]))
    doc = parse_document(p)
    assert "Basalt is a volcanic rock." in doc.text
    assert "fine grained" in doc.text
    assert doc.content_type == "application/pdf"


def test_encrypted_pdf(tmp_path: Path) -> None:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(make_pdf(["secret text"]))))
    writer.encrypt(user_password="hunter2", owner_password="owner", algorithm="RC4-128")
    p = tmp_path / "locked.pdf"
    with p.open("wb") as f:
        writer.write(f)
    with pytest.raises(DocumentParseError, match="encrypted with a password; remove the password"):
        parse_document(p)


def test_pdf_with_empty_user_password_is_read(tmp_path: Path) -> None:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(make_pdf(["open to all"]))))
    writer.encrypt(user_password="", owner_password="owner", algorithm="RC4-128")
    p = tmp_path / "restricted.pdf"
    with p.open("wb") as f:
        writer.write(f)
    assert "open to all" in parse_document(p).text


def test_pdf_without_text_layer(tmp_path: Path) -> None:
    p = tmp_path / "scan.pdf"
    p.write_bytes(make_pdf([]))
    with pytest.raises(DocumentParseError, match="no text; it may be a scanned image"):
        parse_document(p)


def test_docx_paragraphs_and_tables(tmp_path: Path) -> None:
    import docx

    d = docx.Document()
    d.add_heading("Minerals", level=1)
    d.add_paragraph("Feldspar is common.")
    table = d.add_table(rows=2, cols=2)
    table.cell(0, 0).text = "mineral"
    table.cell(0, 1).text = "system"
    table.cell(1, 0).text = "halite"
    table.cell(1, 1).text = "cubic"
    d.add_paragraph("After the table.")
    p = tmp_path / "m.docx"
    d.save(str(p))
    doc = parse_document(p)
    lines = doc.text.splitlines()
    assert lines == [
        "Minerals",
        "Feldspar is common.",
        "mineral | system",
        "halite | cubic",
        "After the table.",
    ]


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("empty.txt", b"", "the file is empty"),
        ("blank.md", b"  \n\n\t", "the file is empty"),
        ("bin.txt", bytes(range(256)) * 8, "binary file"),
        ("fake.pdf", b"hello, not a pdf", "is not a PDF"),
        ("broken.pdf", b"%PDF-1.4\n\x00\x01garbage garbage", "PDF"),
        ("fake.docx", b"plain text pretending", "is not a Word document"),
        ("old.docx", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 100, "Word 97-2003"),
        ("image.png", b"\x89PNG\r\n", "file type '.png' is not supported"),
        ("page.html", b"<html><body><script>x()</script></body></html>", "contains no text"),
    ],
)
def test_unparseable_documents(tmp_path: Path, name: str, content: bytes, match: str) -> None:
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(DocumentParseError, match=match) as info:
        parse_document(p)
    assert info.value.reason.startswith(name)
    assert info.value.bedrock_name == "ValidationException"


def test_zip_that_is_not_docx(tmp_path: Path) -> None:
    import zipfile

    p = tmp_path / "z.docx"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("hello.txt", "hi")
    with pytest.raises(DocumentParseError, match="not a Word document"):
        parse_document(p)


def test_sidecar_plain_and_typed(tmp_path: Path) -> None:
    doc = tmp_path / "a.txt"
    side = sidecar_for(doc)
    assert side.name == "a.txt.metadata.json" and is_sidecar(side) and not is_sidecar(doc)
    side.write_text(
        json.dumps({"metadataAttributes": {"genre": "drama", "year": 2021, "ok": True, "tags": ["x", "y"]}})
    )
    assert read_sidecar(side) == {"genre": "drama", "year": 2021, "ok": True, "tags": ["x", "y"]}
    side.write_text(
        json.dumps(
            {
                "metadataAttributes": {
                    "genre": {
                        "value": {"type": "STRING", "stringValue": "drama"},
                        "includeForEmbedding": True,
                    },
                    "year": {"value": {"type": "NUMBER", "numberValue": 2021}},
                    "tags": {"value": {"type": "STRING_LIST", "stringListValue": ["a"]}},
                    "ok": {"value": {"type": "BOOLEAN", "booleanValue": False}},
                }
            }
        )
    )
    assert read_sidecar(side) == {"genre": "drama", "year": 2021, "tags": ["a"], "ok": False}


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{not json", "is not valid JSON"),
        ('{"attributes": {}}', "needs a top-level object 'metadataAttributes'"),
        ('{"metadataAttributes": {"a": {"nested": 1}}}', "needs a 'value' with 'type'"),
        ('{"metadataAttributes": {"a": [1, 2]}}', "lists may hold only strings"),
        ('{"metadataAttributes": {"a": null}}', "allowed: string, number, boolean"),
        ('{"metadataAttributes": {"x-amz-bedrock-kb-source-uri": "s"}}', "is reserved"),
        ('{"metadataAttributes": {"a": "' + "x" * 11000 + '"}}', "10240-byte limit"),
    ],
)
def test_bad_sidecars(tmp_path: Path, content: str, match: str) -> None:
    p = tmp_path / "d.txt.metadata.json"
    p.write_text(content)
    with pytest.raises(DocumentParseError, match=match):
        read_sidecar(p)
