/**
 * One queue per key: operations on the same sandbox run one after another, in arrival order. Without it two
 * policy updates could reach a proxy out of order (the store saying revision 3 while the proxy enforces 2), or
 * a snapshot could read a filesystem that a concurrent pause is freezing.
 */
export class KeyedMutex {
  private readonly tails = new Map<string, Promise<void>>();

  async run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.tails.get(key) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((r) => (release = r));
    const tail = prev.then(() => mine);
    this.tails.set(key, tail);
    await prev;
    try {
      return await fn();
    } finally {
      release();
      // Forget the key once nobody queues behind us, so the map does not grow with every sandbox ever seen.
      if (this.tails.get(key) === tail) this.tails.delete(key);
    }
  }
}
