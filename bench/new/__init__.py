"""`bench new <kind> NAME`: a complete plugin package (pyproject.toml with its entry point, the
plugin module, its gin file, a README and a contract test) written from the templates beside this
module (bench.new.scaffold; templates/<kind>/ and templates/common/)."""
