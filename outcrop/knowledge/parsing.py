"""Documents to text: txt, md, html, csv, pdf and docx, as Bedrock's knowledge bases take them.

Libraries (each well kept, pure Python or with wheels for every platform, no network):

- PDF: ``pypdf`` (pure Python, the maintained successor of PyPDF2; text extraction with layout
  order, AES/RC4 decryption for documents with an empty user password);
- DOCX: ``python-docx`` (paragraphs and tables in document order);
- HTML: ``beautifulsoup4`` over ``lxml`` (tolerant of broken markup; script/style dropped);
- CSV: the standard library's ``csv`` (each row becomes one line of ``header: value`` pairs so a
  chunk keeps the column names next to the values);
- txt / md: decoded as UTF-8 (BOM allowed), then cp1252 as Windows editors write it; markdown is
  kept as written (headings and lists are useful to the embedder and the reader).

Everything that cannot become text (empty files, encrypted PDFs, binary garbage, a zip that is
not a Word document, scanned PDFs with no text layer) raises :class:`DocumentParseError` whose
message is one plain sentence naming the problem and the fix: ingestion counts it as a failed
document and puts the sentence in the job's ``failureReasons``.
"""

from __future__ import annotations

import csv
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

from outcrop.errors import InvalidRequestError

# Bedrock's own document size limit is 50 MB per file; larger files are skipped with a reason.
MAX_DOCUMENT_BYTES = 50 * 1024 * 1024

CONTENT_TYPES: dict[str, str] = {
    ".txt": "text/plain",
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".html": "text/html",
    ".htm": "text/html",
    ".csv": "text/csv",
    ".pdf": "application/pdf",
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
}
SUPPORTED_SUFFIXES: frozenset[str] = frozenset(CONTENT_TYPES)

# A text file whose decoded characters are more than this share of control characters is
# binary garbage renamed to .txt (real text has tabs and newlines, nothing else below 0x20).
_MAX_CONTROL_CHAR_RATIO = 0.05


class DocumentParseError(InvalidRequestError):
    """Raised when a document cannot be turned into text (empty, encrypted, corrupt, binary, or an
    unsupported type). ``reason`` is one plain sentence with the fix. Retrying does not help."""

    def __init__(self, reason: str, *, path: str | None = None) -> None:
        super().__init__(reason, path=path)
        self.reason = reason
        self.path = path


@dataclass(frozen=True)
class ParsedDocument:
    text: str
    content_type: str


def parse_document(path: Path) -> ParsedDocument:
    """Read one document and return its text. Raises :class:`DocumentParseError`."""
    path = Path(path)
    suffix = path.suffix.lower()
    name = path.name
    if suffix not in CONTENT_TYPES:
        raise DocumentParseError(
            f"{name}: file type '{suffix or '(none)'}' is not supported; supported: "
            f"{', '.join(sorted(SUPPORTED_SUFFIXES))}. Convert it to one of these or remove it from the data source.",
            path=str(path),
        )
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DocumentParseError(
            f"{name}: cannot be read ({e.strerror or e}); check the file's permissions.", path=str(path)
        ) from e
    if len(data) > MAX_DOCUMENT_BYTES:
        raise DocumentParseError(
            f"{name}: is {len(data) / 1e6:.1f} MB, over the {MAX_DOCUMENT_BYTES // (1024 * 1024)} MB limit "
            "for one document; split it into smaller files.",
            path=str(path),
        )
    if not data.strip():
        raise DocumentParseError(f"{name}: the file is empty; add content or remove it.", path=str(path))
    content_type = CONTENT_TYPES[suffix]
    parser = _PARSERS[content_type]
    try:
        text = parser(data, name)
    except DocumentParseError:
        raise
    except Exception as e:  # a library's own error on a corrupt file: name it, never crash the job
        raise DocumentParseError(
            f"{name}: is not a readable {suffix[1:].upper()} file ({type(e).__name__}: {e}); "
            "open and save it again with an editor, or remove it.",
            path=str(path),
        ) from e
    text = _normalize(text)
    if not text.strip():
        hint = (
            "it may be a scanned image: run OCR on it first"
            if suffix == ".pdf"
            else "add text to it or remove it"
        )
        raise DocumentParseError(f"{name}: contains no text; {hint}.", path=str(path))
    return ParsedDocument(text=text, content_type=content_type)


def _normalize(text: str) -> str:
    """One newline style, no NULs, no trailing spaces, at most one blank line in a row."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    lines = [line.rstrip() for line in text.split("\n")]
    out: list[str] = []
    blank = 0
    for line in lines:
        blank = blank + 1 if not line else 0
        if blank <= 1:
            out.append(line)
    return "\n".join(out).strip()


def _decode_text(data: bytes, name: str) -> str:
    if b"\x00" in data[:8192]:
        # UTF-16 text carries a BOM; anything else with NULs is binary.
        if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
            return data.decode("utf-16")
        raise DocumentParseError(
            f"{name}: looks like a binary file, not text (it contains NUL bytes); "
            "give it the right extension or remove it."
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        try:
            text = data.decode("cp1252")
        except UnicodeDecodeError as e:
            raise DocumentParseError(
                f"{name}: is neither UTF-8 nor Windows-1252 text; save it as UTF-8."
            ) from e
    controls = sum(1 for c in text if ord(c) < 32 and c not in "\t\n\r\f")
    if text and controls / len(text) > _MAX_CONTROL_CHAR_RATIO:
        raise DocumentParseError(
            f"{name}: looks like a binary file, not text ({controls} control characters); "
            "give it the right extension or remove it."
        )
    return text


def _parse_text(data: bytes, name: str) -> str:
    return _decode_text(data, name)


def _parse_html(data: bytes, name: str) -> str:
    from bs4 import BeautifulSoup

    if b"\x00" in data[:8192] and data[:2] not in (b"\xff\xfe", b"\xfe\xff"):
        _decode_text(data, name)  # raises the binary-file error
    soup = BeautifulSoup(data, "lxml")
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    for tag in soup(["script", "style", "noscript", "template", "head"]):
        tag.decompose()
    # Block elements end a line; inline ones (<b>, <a>, <span>) stay inside their sentence.
    for tag in soup.find_all(_HTML_BLOCK_TAGS):
        tag.insert_after("\n")
    for br in soup.find_all("br"):
        br.replace_with("\n")
    body = soup.get_text("")
    return f"{title}\n\n{body}" if title and not body.lstrip().startswith(title) else body


_HTML_BLOCK_TAGS = [
    "p",
    "div",
    "section",
    "article",
    "header",
    "footer",
    "main",
    "aside",
    "nav",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "li",
    "ul",
    "ol",
    "dl",
    "dt",
    "dd",
    "table",
    "tr",
    "pre",
    "blockquote",
    "figure",
    "figcaption",
    "hr",
]


def _parse_csv(data: bytes, name: str) -> str:
    text = _decode_text(data, name)
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    rows = [row for row in csv.reader(io.StringIO(text), dialect) if any(cell.strip() for cell in row)]
    if not rows:
        return ""
    header = [h.strip() for h in rows[0]]
    if len(rows) == 1:
        return ", ".join(header)
    lines = []
    for row in rows[1:]:
        pairs = []
        for i, cell in enumerate(row):
            key = header[i] if i < len(header) and header[i] else f"column {i + 1}"
            pairs.append(f"{key}: {cell.strip()}")
        lines.append("; ".join(pairs))
    return "\n".join(lines)


def _parse_pdf(data: bytes, name: str) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    if not data.lstrip()[:5].startswith(b"%PDF"):
        raise DocumentParseError(
            f"{name}: is not a PDF (it does not start with '%PDF'); give it the right extension or remove it."
        )
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            # Many "protected" PDFs only restrict printing: their user password is empty.
            try:
                ok = bool(reader.decrypt(""))
            except Exception:
                ok = False
            if not ok:
                raise DocumentParseError(
                    f"{name}: is encrypted with a password; remove the password (save an unprotected copy) "
                    "and sync again."
                )
        pages = [page.extract_text() or "" for page in reader.pages]
    except PdfReadError as e:
        raise DocumentParseError(
            f"{name}: is a damaged PDF ({e}); export it again from the program that made it, or remove it."
        ) from e
    return "\n\n".join(p.strip() for p in pages if p.strip())


def _parse_docx(data: bytes, name: str) -> str:
    import docx
    from docx.opc.exceptions import PackageNotFoundError

    if not zipfile.is_zipfile(io.BytesIO(data)):
        if data[:8] == b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1":
            raise DocumentParseError(
                f"{name}: is an old Word 97-2003 (.doc) file or is password-protected; save it as .docx "
                "without a password."
            )
        raise DocumentParseError(
            f"{name}: is not a Word document (a .docx is a zip archive); give it the right extension or remove it."
        )
    try:
        document = docx.Document(io.BytesIO(data))
    except (PackageNotFoundError, KeyError, zipfile.BadZipFile) as e:
        raise DocumentParseError(
            f"{name}: is a zip archive but not a Word document ({e}); save it again from Word or remove it."
        ) from e
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    parts: list[str] = []
    for block in document.iter_inner_content():
        if isinstance(block, Paragraph):
            parts.append(block.text)
        elif isinstance(block, Table):
            for row in block.rows:
                cells: list[str] = []
                for cell in row.cells:
                    t = cell.text.strip()
                    if t and (not cells or cells[-1] != t):  # merged cells repeat their text
                        cells.append(t)
                if cells:
                    parts.append(" | ".join(cells))
    return "\n".join(parts)


_PARSERS = {
    "text/plain": _parse_text,
    "text/markdown": _parse_text,
    "text/html": _parse_html,
    "text/csv": _parse_csv,
    "application/pdf": _parse_pdf,
    CONTENT_TYPES[".docx"]: _parse_docx,
}
