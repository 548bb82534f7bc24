"""CITATION.cff: a Citation File Format 1.2.0 file that cites bench and, as the preferred citation,
the paper bench reproduces; its version and licence agree with the package's.

Checked against the format's required keys here (the full schema was checked once with
`cffconvert --validate`, which is not a test dependency)."""

from importlib.metadata import metadata
from pathlib import Path

import yaml  # PyYAML: a dependency of accelerate, so always installed with bench

ROOT = Path(__file__).resolve().parents[2]
PAPER = "Flow Matching with Optimized Subclass Priors for Medical Image Augmentation"
# the reference types of CFF 1.2.0 a paper may take (a subset of the schema's enum)
PAPER_TYPES = {"article", "conference-paper", "generic", "preprint", "proceedings", "unpublished"}


def citation() -> dict:
    return yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))


def valid_authors(authors) -> bool:
    """A non-empty list of persons (family-names) or entities (name), as CFF requires."""
    return bool(authors) and all(
        isinstance(a, dict) and (a.get("name") or a.get("family-names")) for a in authors
    )


def test_the_citation_file_has_the_keys_cff_1_2_0_requires():
    cff = citation()
    assert cff["cff-version"] == "1.2.0"
    assert isinstance(cff["message"], str) and cff["message"].strip()
    assert isinstance(cff["title"], str) and "bench" in cff["title"]
    assert valid_authors(cff["authors"])
    assert cff.get("type", "software") == "software"


def test_it_agrees_with_the_package_metadata():
    installed = metadata("medaug-bench")  # what pyproject.toml declares, as the installed package reports it
    cff = citation()
    assert str(cff["version"]) == installed["Version"]
    assert cff["license"] == "MIT" and "MIT" in (
        installed.get("License") or installed.get("License-Expression") or ""
    )


def test_the_preferred_citation_is_the_paper_with_its_code_repository():
    paper = citation()["preferred-citation"]
    assert paper["title"] == PAPER
    assert paper["type"] in PAPER_TYPES
    assert valid_authors(paper["authors"])
    assert paper["repository-code"] == "https://github.com/Felix-012/OptPriorFM"
