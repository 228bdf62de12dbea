"""Where each output image came from, said three ways (switchable with --provenance): a signed C2PA manifest
(manifest.py, signed with credentials.py's certificate), IPTC/XMP metadata (xmp.py) and an invisible watermark
(watermark.py); stamp.py applies them on the delivery thread, verify.py reads them back."""
