// TLS on the app links. A hub node serves its app link with its peer certificate, issued by
// the hub's own CA and naming the node's member id; the app checks it against the hub's
// trust bundle (the `<hub>-peer-trust` ConfigMap on Kubernetes, `ca.crt`), not the system
// roots. A link to a listed node must present that node's id; the first link (to the
// endpoint, which may be a Service in front of every node) accepts any node of the hub.
//
// The bundle is read from its file at every (re)connection, so a CA rotation (the bundle
// gains the new CA, later loses the old one) is followed without a restart; a file that
// becomes unreadable or empty keeps the last good bundle in use.

import * as fs from "node:fs";
import type { PeerCertificate } from "node:tls";

const PEM_CERT = /-----BEGIN CERTIFICATE-----/;

export class Trust {
  private last: Buffer;

  private constructor(
    private readonly file: string | null,
    pem: Buffer,
    private readonly warn: (message: string) => void,
  ) {
    this.last = pem;
  }

  /** From PEM text (`ca`) or a file (`caFile`, re-read at each connection). Throws when unusable. */
  static from(source: { ca?: string | Buffer; caFile?: string }, warn: (message: string) => void): Trust {
    if (source.ca != null) {
      const pem = Buffer.isBuffer(source.ca) ? source.ca : Buffer.from(source.ca);
      if (!PEM_CERT.test(pem.toString("latin1"))) throw new Error("@roomcast/socket.io: `ca` holds no PEM certificate");
      return new Trust(null, pem, warn);
    }
    const file = source.caFile!;
    let pem: Buffer;
    try {
      pem = fs.readFileSync(file);
    } catch (e) {
      throw new Error(`@roomcast/socket.io: cannot read the hub's trust bundle ${file} (caFile / ROOMCAST_APP_CA_FILE): ${(e as Error).message}`);
    }
    if (!PEM_CERT.test(pem.toString("latin1"))) {
      throw new Error(`@roomcast/socket.io: ${file} (caFile / ROOMCAST_APP_CA_FILE) holds no PEM certificate`);
    }
    return new Trust(file, pem, warn);
  }

  /** The bundle new connections check against. */
  bundle(): Buffer {
    if (this.file === null) return this.last;
    try {
      const pem = fs.readFileSync(this.file);
      if (PEM_CERT.test(pem.toString("latin1"))) {
        this.last = pem;
      } else {
        this.warn(`the trust bundle ${this.file} holds no PEM certificate now; keeping the previous one`);
      }
    } catch (e) {
      this.warn(`cannot read the trust bundle ${this.file} (${(e as Error).message}); keeping the previous one`);
    }
    return this.last;
  }
}

/**
 * Whether `cert` (already chained to the bundle by Node's TLS) names hub node `node`; any node
 * of the hub when `node` is empty (the endpoint). Returns the error to fail the handshake with.
 */
export function checkNode(node: string, cert: PeerCertificate): Error | undefined {
  const names = (cert.subjectaltname ?? "")
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s.startsWith("DNS:"))
    .map((s) => s.slice(4));
  if (names.length === 0) return new Error("the hub node's certificate names no member id (no DNS subject alternative name)");
  if (node !== "" && !names.includes(node)) {
    return new Error(`the certificate at this address is hub node ${names.join(", ")}'s, not ${node}'s`);
  }
  return undefined;
}
