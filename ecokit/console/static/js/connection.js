// What the page says about its connection: a badge in the top bar and, while the stream is
// down, a banner over the map with the reconnect countdown (click it to retry now).

import {setText} from './dom.js';

export class ConnectionView {
  constructor(badge, banner, {onRetry}) {
    this.badge = badge;
    this.banner = banner;
    this.onRetry = onRetry;
    this.ticker = null;
    this.current = {state: 'connecting'};
    banner.addEventListener('click', () => {
      if (this.current.state === 'reconnecting') this.onRetry();
    });
  }

  show(status) {
    this.current = status;
    clearInterval(this.ticker);
    this.ticker = null;
    this.paint();
    if (status.state === 'reconnecting' && status.retryAt) this.ticker = setInterval(() => this.paint(), 1000);
    document.body.dataset.connection = status.state;
  }

  paint() {
    const s = this.current;
    this.badge.dataset.state = s.state;
    this.banner.dataset.state = s.state;
    switch (s.state) {
      case 'live':
        setText(this.badge, 'live');
        this.banner.hidden = true;
        break;
      case 'connecting':
        setText(this.badge, 'connecting…');
        this.banner.hidden = true;
        break;
      case 'reconnecting': {
        const wait = s.retryAt ? Math.max(0, Math.ceil((s.retryAt - Date.now()) / 1000)) : 0;
        const when = s.retryAt && wait > 0 ? `reconnecting in ${wait} s` : 'reconnecting…';
        setText(this.badge, `${when} (attempt ${Math.max(1, s.attempt)})`);
        setText(this.banner, `Connection to the console lost${s.reason ? ` (${s.reason})` : ''}: ${when}, `
          + `attempt ${Math.max(1, s.attempt)}. The map shows the last known positions. Click to retry now.`);
        this.banner.hidden = false;
        break;
      }
      case 'unauthorized':
        setText(this.badge, 'token needed');
        setText(this.banner, `${s.reason ? `${s.reason[0].toUpperCase()}${s.reason.slice(1)}. ` : ''}`
          + 'Open the URL that `ecokit up` printed (or run `ecokit open`) to sign in again.');
        this.banner.hidden = false;
        break;
      default:
        setText(this.badge, s.state);
    }
  }
}
