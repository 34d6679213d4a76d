// How to put N markers on a software canvas (headless Chromium without GPU, like a browser on a
// machine without acceleration): one path of N discs, N copies of a pre-drawn canvas or
// ImageBitmap, or N squares batched by colour. benchmarks/console_page.py --part drawing.
// The result (ms per frame of N markers, mean of 5 frames, best of 3 rounds) goes to
// document.body.dataset.result as JSON.

const params = new URLSearchParams(location.search);
const N = Number(params.get('n') || 5000);
const W = 1100;
const H = 700;

function sprite(r) {
  const s = document.createElement('canvas');
  s.width = s.height = r * 4 + 4;
  const g = s.getContext('2d');
  g.beginPath();
  g.arc(r * 2 + 2, r * 2 + 2, r, 0, Math.PI * 2);
  g.fillStyle = '#1f9d55';
  g.fill();
  g.lineWidth = 1.5;
  g.strokeStyle = '#ffffff';
  g.stroke();
  return s;
}

async function main() {
  const canvas = document.createElement('canvas');
  canvas.width = W;
  canvas.height = H;
  document.body.append(canvas);
  const ctx = canvas.getContext('2d');
  const s6 = sprite(6);
  const b6 = await createImageBitmap(s6);
  const xs = Float64Array.from({length: N}, () => Math.random() * W);
  const ys = Float64Array.from({length: N}, () => Math.random() * H);
  const cases = {
    'one path of discs (fill + stroke)': () => {
      ctx.beginPath();
      for (let i = 0; i < N; i += 1) {
        ctx.moveTo(xs[i] + 6, ys[i]);
        ctx.arc(xs[i], ys[i], 6, 0, Math.PI * 2);
      }
      ctx.fillStyle = '#1f9d55';
      ctx.fill();
      ctx.lineWidth = 1.5;
      ctx.strokeStyle = '#ffffff';
      ctx.stroke();
    },
    'drawImage of a canvas sprite': () => {
      for (let i = 0; i < N; i += 1) ctx.drawImage(s6, Math.round(xs[i]) - 14, Math.round(ys[i]) - 14);
    },
    'drawImage of an ImageBitmap sprite': () => {
      for (let i = 0; i < N; i += 1) ctx.drawImage(b6, Math.round(xs[i]) - 14, Math.round(ys[i]) - 14);
    },
    'fillRect 6x6 squares': () => {
      ctx.fillStyle = '#1f9d55';
      for (let i = 0; i < N; i += 1) ctx.fillRect(Math.round(xs[i]) - 3, Math.round(ys[i]) - 3, 6, 6);
    },
  };
  const best = {};
  for (let round = 0; round < 3; round += 1) {
    for (const [name, draw] of Object.entries(cases)) {
      const started = performance.now();
      for (let frame = 0; frame < 5; frame += 1) {
        ctx.clearRect(0, 0, W, H);
        draw();
        ctx.getImageData(0, 0, 1, 1); // wait for the drawing to be rasterised
      }
      const ms = (performance.now() - started) / 5;
      best[name] = Math.min(best[name] ?? Infinity, ms);
    }
  }
  document.body.dataset.result = JSON.stringify(best);
}

main();
