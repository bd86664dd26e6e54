// Reconnection delays: exponential from 100 ms to 5 s, with jitter (half to all of the step).

const FIRST_MS = 100;
const MAX_MS = 5000;

export function backoffDelay(attempt: number): number {
  const step = Math.min(MAX_MS, FIRST_MS * 2 ** Math.min(attempt, 16));
  return Math.round(step / 2 + (Math.random() * step) / 2);
}
