'use strict';
// A second upstream for the credentials-proxy suite: it answers with the
// client port the request came from and the credential headers it carried,
// so the suite can see which upstream connection the proxy reused.
const http = require('http');
const srv = http.createServer((req, res) => {
  req.resume();
  req.on('end', () => {
    res.writeHead(200, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify({ port: req.socket.remotePort, auth: req.headers.authorization || null,
      xk: req.headers['x-k'] || null, url: req.url }));
  });
});
srv.keepAliveTimeout = 30000;
srv.listen(0, '127.0.0.1', () => console.log('http ' + srv.address().port));
