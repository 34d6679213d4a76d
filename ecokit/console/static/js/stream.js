// The live stream (WebSocket /stream): snapshot on connect, diffs, stats, command and event
// frames. Reconnects with jittered exponential backoff and reports every state change so the
// page can say what is happening.

const UNAUTHORIZED = 4401;
const FORBIDDEN_ORIGIN = 4403;
// Why a connection ended, in words (close codes of RFC 6455 and of the console).
const CLOSE_REASONS = {
  1001: 'the console is stopping',
  1006: 'connection dropped',
  1011: 'console error',
  1012: 'the console is restarting',
  4000: 'no data for too long',
  4408: 'this tab fell behind',
};

export class Stream {
  /**
   * @param {string|URL} url ws:// or wss:// URL of /stream
   * @param {object} options onFrame(frame), onState({state, attempt, retryAt, reason}),
   *   checkAuth() -> Promise<boolean> (is the token still good? asked when a connection fails
   *   before it opened, since a browser hides the HTTP status of a refused upgrade)
   */
  constructor(url, {onFrame, onState, checkAuth, minDelayMs = 500, maxDelayMs = 30000, silenceMs = 45000}) {
    this.url = url;
    this.onFrame = onFrame;
    this.onState = onState;
    this.checkAuth = checkAuth || (async () => true);
    this.minDelayMs = minDelayMs;
    this.maxDelayMs = maxDelayMs;
    this.silenceMs = silenceMs;
    this.attempt = 0;
    this.ws = null;
    this.retryTimer = null;
    this.watchdog = null;
    this.stopped = false;
    this.frames = 0;
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    clearTimeout(this.watchdog);
    if (this.ws) this.ws.close(1000, 'page closed');
  }

  /** Skip the wait (the user clicked the reconnect banner). */
  retryNow() {
    if (this.stopped || (this.ws && this.ws.readyState <= WebSocket.OPEN)) return;
    clearTimeout(this.retryTimer);
    this.connect();
  }

  setState(state, extra = {}) {
    this.state = state;
    this.onState({state, attempt: this.attempt, ...extra});
  }

  connect() {
    this.retryTimer = null;
    this.setState(this.attempt === 0 ? 'connecting' : 'reconnecting', {retryAt: null});
    let opened = false;
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (err) {
      this.scheduleRetry(String(err));
      return;
    }
    this.ws = ws;
    ws.addEventListener('open', () => {
      opened = true;
      this.armWatchdog();
    });
    ws.addEventListener('message', (event) => {
      this.armWatchdog();
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return; // not ours to fix; the server only sends JSON
      }
      if (frame && frame.type === 'snapshot') {
        // A connection counts as good once its snapshot arrived: reset the backoff then.
        this.attempt = 0;
        this.setState('live');
      }
      this.frames += 1;
      this.onFrame(frame);
    });
    ws.addEventListener('close', async (event) => {
      clearTimeout(this.watchdog);
      if (this.ws !== ws || this.stopped) return;
      this.ws = null;
      if (event.code === UNAUTHORIZED) {
        this.setState('unauthorized', {reason: 'the console token was refused'});
        return;
      }
      if (event.code === FORBIDDEN_ORIGIN) {
        this.setState('unauthorized', {reason: 'the console refused this page\'s origin (open the console\'s own URL)'});
        return;
      }
      if (!opened) {
        let authorized = true;
        try {
          authorized = await this.checkAuth();
        } catch {
          authorized = true; // unreachable: retry
        }
        if (!authorized) {
          this.setState('unauthorized', {reason: 'the console token was refused'});
          return;
        }
      }
      this.scheduleRetry(event.reason || CLOSE_REASONS[event.code] || `closed (${event.code})`);
    });
  }

  armWatchdog() {
    // The server pings every 20 s: silence for longer means a dead connection TCP has not noticed.
    clearTimeout(this.watchdog);
    this.watchdog = setTimeout(() => {
      if (this.ws) this.ws.close(4000, 'no frame for too long');
    }, this.silenceMs);
  }

  scheduleRetry(reason) {
    if (this.stopped) return;
    this.attempt += 1;
    const step = Math.min(this.maxDelayMs, this.minDelayMs * 2 ** (this.attempt - 1));
    const delay = step * (0.5 + Math.random() * 0.5);
    const retryAt = Date.now() + delay;
    this.setState('reconnecting', {retryAt, reason});
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }
}

/** ws(s)://host/<base>/stream for the page's own origin and path. */
export function streamUrl(base = document.baseURI) {
  const url = new URL('stream', base);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  return url;
}
