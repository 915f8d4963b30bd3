// STAND-IN for BookInfo's ratings app (lab only): the documented API of ratings v1 and nothing more
// (docs/facts.md section 2). No npm dependencies, so `npm install` works inside an offline lab VM.
//   GET /ratings/<digits> -> 200 {"id":<n>,"ratings":{"Reviewer1":5,"Reviewer2":4}}
//   GET /ratings/<other>  -> 400
//   GET /health           -> 200 {"status":"Ratings is healthy"}
const http = require('http');

const port = Number(process.argv[2]);
if (!port) {
  console.error('usage: node ratings.js <port>');
  process.exit(1);
}

function send(res, status, body) {
  res.writeHead(status, {'Content-Type': 'application/json'});
  res.end(JSON.stringify(body));
}

http.createServer((req, res) => {
  const path = req.url.split('?')[0];
  if (req.method === 'GET' && path === '/health') {
    return send(res, 200, {status: 'Ratings is healthy'});
  }
  const m = path.match(/^\/ratings\/(.*)$/);
  if (req.method === 'GET' && m) {
    if (!/^\d+$/.test(m[1])) return send(res, 400, {error: 'please provide numeric product ID'});
    return send(res, 200, {id: Number(m[1]), ratings: {Reviewer1: 5, Reviewer2: 4}});
  }
  send(res, 404, {error: 'not found'});
}).listen(port, () => console.log(`ratings stand-in listening on ${port}`));
