"""What every output image says of itself in XMP, for the tools that read only metadata: that it was made by
a trained model (IPTC's DigitalSourceType `trainedAlgorithmicMedia`, the term the EU AI Act's machine-readable
marking is read against), by which model and by which generator. No prompt, no date, no id: the bytes of an
image stay a function of its request, so a seed still reproduces it byte for byte.
"""

from __future__ import annotations

import functools

import fluxserve

DIGITAL_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
# The model behind each kind of job (GenerationSpec.kind).
MODELS = {"text": "FLUX.1 [schnell]", "redux": "FLUX.1 [schnell] Redux"}


@functools.lru_cache(maxsize=None)
def packet(kind: str) -> bytes:
    """The XMP packet for an image of this kind of job (constants only: nothing to escape)."""
    return f"""<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about=""
    xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"
    xmlns:xmp="http://ns.adobe.com/xap/1.0/"
    Iptc4xmpExt:DigitalSourceType="{DIGITAL_SOURCE_TYPE}"
    Iptc4xmpExt:AISystemUsed="{MODELS[kind]}"
    xmp:CreatorTool="fluxserve {fluxserve.__version__}"/>
 </rdf:RDF>
</x:xmpmeta>
<?xpacket end="r"?>""".encode()
