// An independent C2PA reader (TrustNXT's pure TypeScript c2pa-ts, not the c2pa-rs the server signs with):
// reads the manifest store of each file given, validates its active manifest against the file, and prints
// one JSON object per file: {file, format, found, valid, codes, claimGenerator, actions}. It reads JPEG
// and PNG (not WebP).
// package.json pins its cbor-x's optional cbor-extract to 2.2.2 by an override: 2.2.3's prebuilt binaries are
// missing from the registry, which leaves package-lock.json unable to list them and `npm ci` refusing it.
import * as fs from 'node:fs/promises';
import { JPEG, PNG, BMFF } from '@trustnxt/c2pa-ts/asset';
import { SuperBox } from '@trustnxt/c2pa-ts/jumbf';
import { ManifestStore, ValidationResult } from '@trustnxt/c2pa-ts/manifest';

for (const file of process.argv.slice(2)) {
  const buf = new Uint8Array(await fs.readFile(file));
  const format = JPEG.canRead(buf) ? 'jpeg' : PNG.canRead(buf) ? 'png' : BMFF.canRead(buf) ? 'bmff' : null;
  const out = { file, format, found: false, valid: false, codes: [] };
  let asset;
  try {
    const Reader = { jpeg: JPEG, png: PNG, bmff: BMFF }[format];
    asset = Reader ? new Reader(buf) : null;
  } catch (e) {
    out.error = String(e);  // a file too damaged to parse
  }
  if (asset) {
    const jumbf = asset.getManifestJUMBF();
    if (jumbf) {
      out.found = true;
      let result;
      try {
        const store = ManifestStore.read(SuperBox.fromBuffer(jumbf));
        const active = store.getActiveManifest();
        out.claimGenerator = active?.claim?.claimGeneratorName;
        out.actions = (active?.assertions?.assertions ?? []).flatMap((a) => a.actions ?? [])
          .map((a) => ({ action: a.action, digitalSourceType: a.digitalSourceType }));
        result = await store.validate(asset);
      } catch (e) {
        result = ValidationResult.fromError(e);
      }
      out.valid = result.isValid;
      out.codes = result.statusEntries.map((s) => `${s.code}${s.success ? '' : ' (failure)'}`);
    }
  }
  console.log(JSON.stringify(out));
}
