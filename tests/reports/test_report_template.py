"""report.html comes from the packaged Jinja2 template (autoescaped), which ships in the wheel."""

from __future__ import annotations

import fnmatch
import re
import shutil
from pathlib import Path

from test_report import make_results

from medistill.reports import report, write_report

ROOT = Path(__file__).resolve().parents[2]


def test_the_template_files_are_package_data():
    text = (ROOT / "pyproject.toml").read_text()
    line = re.search(r"\[tool\.setuptools\.package-data\]\nmedistill = \[(.*)\]", text).group(1)
    globs = re.findall(r'"([^"]+)"', line)
    package = ROOT / "src" / "medistill"
    files = [p.relative_to(package).as_posix() for p in report.TEMPLATES.iterdir()]
    assert {"reports/templates/report.html.j2", "reports/templates/report.css"} <= set(files)
    for f in files:
        assert any(fnmatch.fnmatch(f, g) for g in globs), f


def test_the_page_is_rendered_from_the_template(tmp_path, monkeypatch):
    own = tmp_path / "templates"
    shutil.copytree(report.TEMPLATES, own)
    page = own / "report.html.j2"
    page.write_text(page.read_text().replace("<body>", '<body class="probe">'))
    monkeypatch.setattr(report, "TEMPLATES", own)
    html = write_report(tmp_path / "out", make_results())["html"].read_text()
    assert '<body class="probe">' in html and html.endswith("</html>\n")
    assert html.count("<table>") >= 2 and "<style>\nbody{font-family" in html


def test_text_is_escaped_and_cells_are_html(tmp_path):
    results = make_results()
    results["title"] = "KD <script>alert(1)</script> & co"
    html = write_report(tmp_path, results)["html"].read_text()
    assert "<script>" not in html
    assert "<title>KD &lt;script&gt;alert(1)&lt;/script&gt; &amp; co</title>" in html
    assert '<td class="num"><span class="v">' in html  # table cells are not escaped twice
