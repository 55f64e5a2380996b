"""Small PDFs made by hand for tests: pages of text lines in Helvetica, and document information."""

from __future__ import annotations

import zlib


def _string(text: str) -> str:
    return "(" + text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") + ")"


def make_pdf(pages: list[list[str]], info: dict[str, str] | None = None, *, deflate: bytes = b"") -> bytes:
    """A PDF 1.4 whose pages show these lines of text (Latin-1), one under the other; `deflate`,
    if given, becomes the first page's content stream, deflated (a decompression bomb, say)."""
    objects: list[str] = []
    font = 3
    first_page = 4
    kids = [first_page + 2 * i for i in range(len(pages))]
    objects.append("<< /Type /Catalog /Pages 2 0 R >>")
    objects.append(f"<< /Type /Pages /Kids [{' '.join(f'{k} 0 R' for k in kids)}] /Count {len(pages)} >>")
    objects.append("<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
    for n, lines in enumerate(pages):
        shown = " ".join(f"{_string(line)} Tj T*" for line in lines)
        stream = f"BT /F{font} 11 Tf 14 TL 72 720 Td {shown} ET"
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            f"/Resources << /Font << /F{font} {font} 0 R >> >> /Contents {kids[n] + 1} 0 R >>"
        )
        if n == 0 and deflate:
            packed = zlib.compress(deflate, 9).decode("latin-1")
            objects.append(f"<< /Length {len(packed)} /Filter /FlateDecode >>\nstream\n{packed}\nendstream")
            continue
        objects.append(f"<< /Length {len(stream.encode('latin-1'))} >>\nstream\n{stream}\nendstream")
    trailer_info = ""
    if info:
        objects.append("<< " + " ".join(f"/{k} {_string(v)}" for k, v in info.items()) + " >>")
        trailer_info = f" /Info {len(objects)} 0 R"
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode("latin-1")
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{offset:010d} 00000 n \n" for offset in offsets).encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R{trailer_info} >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)
