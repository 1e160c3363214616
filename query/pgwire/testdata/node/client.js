// A node-postgres client for the pgwire tests: connects with a password
// (SCRAM), lists tables and columns through information_schema, and runs a
// parameterized query (extended protocol). Prints a stable, delimited form.
//
// Usage: NODE_PATH=<dir with node_modules> node client.js host port user password
const { Client } = require('pg');

async function main() {
  const [host, port, user, password] = process.argv.slice(2);
  const client = new Client({ host, port: Number(port), user, password, database: 'medlake', ssl: { rejectUnauthorized: false } /* TLS; the test's certificate is self-signed */, application_name: 'medlake-node-test' });
  await client.connect();
  try {
    const v = await client.query('SHOW server_version');
    console.log('server_version|' + v.rows[0].server_version);
    console.log('-- tables');
    const tables = await client.query(
      "SELECT table_schema, table_name, table_type FROM information_schema.tables WHERE table_schema = 'public' ORDER BY table_name");
    for (const r of tables.rows) console.log([r.table_schema, r.table_name, r.table_type].join('|'));
    console.log('-- columns');
    const cols = await client.query(
      'SELECT column_name, data_type, is_nullable, ordinal_position FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position',
      ['public', 'lab_results']);
    for (const r of cols.rows) console.log([r.column_name, r.data_type, r.is_nullable, r.ordinal_position].join('|'));
    console.log('-- query');
    const res = await client.query(
      'SELECT lab_id, facility, result_value, abnormal, collected_at FROM lab_results WHERE lab_id <= $1 AND facility = $2 ORDER BY lab_id',
      [7, 'fac0001']);
    console.log(res.fields.map((f) => f.name + ':' + f.dataTypeID).join('|'));
    for (const r of res.rows) {
      console.log([typeof r.lab_id + ' ' + r.lab_id, r.facility, r.result_value, r.abnormal, r.collected_at.toISOString()].join('|'));
    }
  } finally {
    await client.end();
  }
}

main().catch((err) => {
  console.error('node client failed:', err);
  process.exit(1);
});
