// The outgoing queue of one link: messages (already encoded) wait here until the end of the
// current tick, then go out in batches of at most `maxBatchBytes` (Welcome.limits).
//
// Back-pressure: at most `window` bytes are handed to gRPC and not yet written; the rest
// waits here. The queue holds at most `maxQueuedBytes`: past a quarter of it the link counts
// as congested (its transports report `writable: false`, so socket.io drops volatile packets
// as engine.io does on a busy transport), a volatile message that would pass the whole bound
// is dropped, and any other message that would pass it overflows: the link is given up (its
// sessions end, their clients reconnect) rather than letting memory grow without limit.

export type Push = "queued" | "dropped" | "too-large" | "overflow";

export interface QueueOptions {
  maxBatchBytes: number;
  maxQueuedBytes: number;
  /** Writes one batch; `done` is called once it has been handed to the transport. */
  write(batch: Buffer, done: () => void): void;
}

export class OutQueue {
  private parts: Buffer[] = [];
  private head = 0;
  /** Bytes waiting in `parts`. */
  private queued = 0;
  /** Bytes handed to gRPC, not yet written. */
  private inFlight = 0;
  private scheduled = false;
  private stopped = false;
  private readonly window: number;

  constructor(private readonly opts: QueueOptions) {
    this.window = Math.max(opts.maxBatchBytes * 2, 1 << 20);
  }

  /** Bytes held (queued and in flight). */
  get bytes(): number {
    return this.queued + this.inFlight;
  }

  /** Whether the queue is past a quarter of its bound (volatile packets are dropped). */
  get congested(): boolean {
    return this.bytes > this.opts.maxQueuedBytes / 4;
  }

  push(part: Buffer, volatile = false): Push {
    if (this.stopped) return "dropped";
    if (part.length > this.opts.maxBatchBytes) return "too-large";
    if (this.bytes + part.length > this.opts.maxQueuedBytes) return volatile ? "dropped" : "overflow";
    this.parts.push(part);
    this.queued += part.length;
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => {
        this.scheduled = false;
        this.flush();
      });
    }
    return "queued";
  }

  /** Drops everything and takes nothing more. */
  stop(): void {
    this.stopped = true;
    this.parts = [];
    this.head = 0;
    this.queued = 0;
  }

  private flush(): void {
    while (!this.stopped && this.head < this.parts.length && this.inFlight < this.window) {
      const batch: Buffer[] = [];
      let size = 0;
      while (this.head < this.parts.length) {
        const next = this.parts[this.head];
        if (size + next.length > this.opts.maxBatchBytes) break;
        batch.push(next);
        size += next.length;
        this.head++;
      }
      this.queued -= size;
      this.inFlight += size;
      let done = false;
      this.opts.write(batch.length === 1 ? batch[0] : Buffer.concat(batch, size), () => {
        if (done) return;
        done = true;
        this.inFlight -= size;
        if (!this.stopped && this.head < this.parts.length) this.flush();
      });
    }
    if (this.head === this.parts.length) {
      this.parts = [];
      this.head = 0;
    } else if (this.head > 1024 && this.head * 2 > this.parts.length) {
      this.parts = this.parts.slice(this.head);
      this.head = 0;
    }
  }
}
