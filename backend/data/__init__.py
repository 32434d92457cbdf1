"""Data: what people bring and where it is kept. The data dir and the limits on uploads (`config`), the workspace
(its folders and database), safe unpacking and image checks (`safety`), the annotation formats (one module each in
`formats/`, `formats.FORMATS` the registry), importing all-or-nothing (`importer`), the held-out split, the dataset
catalog (list, show, delete) and the embedded demo's synthetic dataset (`demo/`). It may import scoring/ and
storage/, never engine/, jobs/ or ui/; nothing here loads a model or imports torch."""
