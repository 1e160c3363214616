// A pgJDBC client for the pgwire tests: connects with a password (SCRAM),
// lists tables and columns through DatabaseMetaData, and runs a
// parameterized query read in pieces (fetch size 2, so the driver pages
// through a portal). Prints everything in a stable, delimited form.
//
// Usage: java -cp <dir>:postgresql.jar MedlakeClient host port user password
import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.ResultSetMetaData;
import java.time.OffsetDateTime;
import java.time.ZoneOffset;
import java.util.Properties;

public class MedlakeClient {
    public static void main(String[] args) throws Exception {
        String url = "jdbc:postgresql://" + args[0] + ":" + args[1] + "/medlake";
        Properties props = new Properties();
        props.setProperty("user", args[2]);
        props.setProperty("password", args[3]);
        props.setProperty("sslmode", "require"); // TLS; the test's certificate is self-signed
        props.setProperty("ApplicationName", "medlake-jdbc-test");
        // Named server-side statements from the first run, so the second run
        // of the query reads int8, float8, bool and timestamptz in binary.
        props.setProperty("prepareThreshold", "1");
        try (Connection c = DriverManager.getConnection(url, props)) {
            DatabaseMetaData md = c.getMetaData();
            System.out.println("product|" + md.getDatabaseProductName() + "|" + md.getDatabaseMajorVersion());
            System.out.println("-- getCatalogs");
            try (ResultSet rs = md.getCatalogs()) {
                while (rs.next()) {
                    System.out.println(rs.getString("TABLE_CAT"));
                }
            }
            System.out.println("-- getSchemas");
            try (ResultSet rs = md.getSchemas()) {
                while (rs.next()) {
                    System.out.println(rs.getString("TABLE_SCHEM"));
                }
            }
            System.out.println("-- getTableTypes");
            try (ResultSet rs = md.getTableTypes()) {
                int n = 0;
                while (rs.next()) {
                    n++;
                }
                System.out.println(n + " types");
            }
            System.out.println("-- getTables");
            try (ResultSet rs = md.getTables(null, "public", "%", new String[] {"TABLE"})) {
                while (rs.next()) {
                    System.out.println(rs.getString("TABLE_SCHEM") + "|" + rs.getString("TABLE_NAME") + "|" + rs.getString("TABLE_TYPE"));
                }
            }
            System.out.println("-- getColumns");
            try (ResultSet rs = md.getColumns(null, "public", "lab_results", "%")) {
                while (rs.next()) {
                    System.out.println(rs.getString("COLUMN_NAME") + "|" + rs.getInt("DATA_TYPE") + "|" + rs.getString("TYPE_NAME")
                        + "|" + rs.getInt("COLUMN_SIZE") + "|" + rs.getInt("NULLABLE") + "|" + rs.getInt("ORDINAL_POSITION"));
                }
            }
            System.out.println("-- getPrimaryKeys");
            try (ResultSet rs = md.getPrimaryKeys(null, "public", "lab_results")) {
                while (rs.next()) {
                    System.out.println(rs.getString("COLUMN_NAME"));
                }
            }
            System.out.println("-- getIndexInfo");
            try (ResultSet rs = md.getIndexInfo(null, "public", "lab_results", false, true)) {
                while (rs.next()) {
                    System.out.println(rs.getString("INDEX_NAME"));
                }
            }
            System.out.println("-- getImportedKeys");
            try (ResultSet rs = md.getImportedKeys(null, "public", "lab_results")) {
                while (rs.next()) {
                    System.out.println(rs.getString("FKCOLUMN_NAME"));
                }
            }
            System.out.println("-- getTypeInfo");
            try (ResultSet rs = md.getTypeInfo()) {
                StringBuilder names = new StringBuilder();
                while (rs.next()) {
                    String name = rs.getString("TYPE_NAME");
                    if (name.equals("int8") || name.equals("text") || name.equals("timestamptz") || name.equals("numeric")) {
                        names.append(name).append(":").append(rs.getInt("DATA_TYPE")).append(" ");
                    }
                }
                System.out.println(names.toString().trim());
            }
            System.out.println("-- query");
            c.setAutoCommit(false); // fetch size pages only inside a transaction
            try (PreparedStatement ps = c.prepareStatement(
                    "SELECT lab_id, facility, result_value, abnormal, collected_at FROM lab_results WHERE lab_id <= ? AND facility = ? ORDER BY lab_id")) {
                ps.setFetchSize(2);
                for (long max : new long[] {7, 13}) {
                    ps.setLong(1, max);
                    ps.setString(2, "fac0001");
                    try (ResultSet rs = ps.executeQuery()) {
                        ResultSetMetaData rm = rs.getMetaData();
                        StringBuilder h = new StringBuilder();
                        for (int i = 1; i <= rm.getColumnCount(); i++) {
                            h.append(i > 1 ? "|" : "").append(rm.getColumnName(i)).append(":").append(rm.getColumnTypeName(i));
                        }
                        System.out.println(h);
                        while (rs.next()) {
                            double v = rs.getDouble(3);
                            String value = rs.wasNull() ? "NULL" : Double.toString(v);
                            OffsetDateTime at = rs.getObject(5, OffsetDateTime.class);
                            System.out.println(rs.getLong(1) + "|" + rs.getString(2) + "|" + value + "|" + rs.getBoolean(4)
                                + "|" + at.withOffsetSameInstant(ZoneOffset.UTC));
                        }
                    }
                }
            }
            c.commit();
        }
    }
}
