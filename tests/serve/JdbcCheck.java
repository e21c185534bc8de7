// What the PostgreSQL JDBC driver (pgjdbc) sees of `medallion serve`: tests/serve.py runs this
// with Java's single-file source launcher and compares every answer with `medallion query`.
//
//   java -cp /usr/share/java/postgresql.jar tests/serve/JdbcCheck.java JDBC_URL < commands
//
// Reads one command a line, fields separated by tabs, and prints one JSON object a line:
//
//   tables   SCHEMA_PATTERN            DatabaseMetaData.getTables(null, pattern, "%", null)
//   columns  SCHEMA TABLE              DatabaseMetaData.getColumns(null, schema, table, "%")
//   query    LABEL REPEAT SQL [TYPE:VALUE]...
//            a PreparedStatement with these parameters, executed REPEAT times (past pgjdbc's
//            prepareThreshold of 5 it switches to a named server-side statement and binary
//            results); prints the last result and whether every execution gave the same rows
//   update   LABEL SQL                 Statement.executeUpdate, then `SELECT 1` on the same
//            connection; prints the SQLSTATE of the refusal and whether the connection answered
//
// Parameter types: text, int8, float8, numeric, bool, date, timestamptz (ISO-8601 with offset).
// Values are printed by their column's PostgreSQL type: numbers as JSON numbers (numeric
// exactly), dates and timestamps in ISO-8601 (timestamptz with its offset), NULL as null.

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.math.BigDecimal;
import java.nio.charset.StandardCharsets;
import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.ResultSetMetaData;
import java.sql.SQLException;
import java.sql.Statement;
import java.time.LocalDate;
import java.time.LocalDateTime;
import java.time.OffsetDateTime;
import java.time.ZoneOffset;
import java.util.ArrayList;
import java.util.List;

public class JdbcCheck {
    public static void main(String[] args) throws Exception {
        if (args.length < 1) {
            System.err.println("usage: JdbcCheck JDBC_URL [USER [PASSWORD]] < commands");
            System.exit(2);
        }
        String user = args.length > 1 ? args[1] : "medallion";
        String password = args.length > 2 ? args[2] : "";
        BufferedReader in =
                new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        try (Connection conn = DriverManager.getConnection(args[0], user, password)) {
            DatabaseMetaData md = conn.getMetaData();
            System.out.println("{\"product\":" + str(md.getDatabaseProductName() + " "
                    + md.getDatabaseProductVersion()) + ",\"driver\":"
                    + str(md.getDriverVersion()) + "}");
            for (String line; (line = in.readLine()) != null; ) {
                if (line.isBlank()) continue;
                String[] f = line.split("\t", -1);
                try {
                    switch (f[0]) {
                        case "tables" -> tables(md, f[1]);
                        case "columns" -> columns(md, f[1], f[2]);
                        case "query" -> query(conn, f);
                        case "update" -> update(conn, f[1], f[2]);
                        default -> throw new IllegalArgumentException("unknown command " + f[0]);
                    }
                } catch (SQLException e) {
                    System.out.println("{\"command\":" + str(line) + ",\"error\":"
                            + str(e.getMessage()) + ",\"sqlstate\":" + str(e.getSQLState()) + "}");
                }
                System.out.flush();
            }
        }
    }

    static void tables(DatabaseMetaData md, String schema) throws SQLException {
        List<String> rows = new ArrayList<>();
        try (ResultSet rs = md.getTables(null, schema, "%", null)) {
            while (rs.next()) {
                rows.add("[" + str(rs.getString("TABLE_SCHEM")) + ","
                        + str(rs.getString("TABLE_NAME")) + ","
                        + str(rs.getString("TABLE_TYPE")) + "]");
            }
        }
        System.out.println("{\"tables\":" + str(schema) + ",\"rows\":["
                + String.join(",", rows) + "]}");
    }

    static void columns(DatabaseMetaData md, String schema, String table) throws SQLException {
        List<String> rows = new ArrayList<>();
        try (ResultSet rs = md.getColumns(null, schema, table, "%")) {
            while (rs.next()) {
                rows.add("{\"name\":" + str(rs.getString("COLUMN_NAME"))
                        + ",\"type_name\":" + str(rs.getString("TYPE_NAME"))
                        + ",\"data_type\":" + rs.getInt("DATA_TYPE")
                        + ",\"size\":" + rs.getInt("COLUMN_SIZE")
                        + ",\"digits\":" + rs.getInt("DECIMAL_DIGITS")
                        + ",\"position\":" + rs.getInt("ORDINAL_POSITION") + "}");
            }
        }
        System.out.println("{\"columns\":" + str(schema + "." + table) + ",\"rows\":["
                + String.join(",", rows) + "]}");
    }

    static void query(Connection conn, String[] f) throws SQLException {
        String label = f[1];
        int repeat = Integer.parseInt(f[2]);
        String last = null, header = null;
        boolean stable = true;
        try (PreparedStatement ps = conn.prepareStatement(f[3])) {
            for (int i = 4; i < f.length; i++) bind(ps, i - 3, f[i]);
            for (int n = 0; n < repeat; n++) {
                try (ResultSet rs = ps.executeQuery()) {
                    ResultSetMetaData m = rs.getMetaData();
                    List<String> cols = new ArrayList<>();
                    for (int c = 1; c <= m.getColumnCount(); c++) {
                        cols.add("[" + str(m.getColumnLabel(c)) + ","
                                + str(m.getColumnTypeName(c)) + "]");
                    }
                    List<String> rows = new ArrayList<>();
                    while (rs.next()) {
                        List<String> cells = new ArrayList<>();
                        for (int c = 1; c <= m.getColumnCount(); c++) {
                            cells.add(cell(rs, c, m.getColumnTypeName(c)));
                        }
                        rows.add("[" + String.join(",", cells) + "]");
                    }
                    String got = "[" + String.join(",", rows) + "]";
                    stable &= last == null || last.equals(got);
                    last = got;
                    header = "[" + String.join(",", cols) + "]";
                }
            }
        }
        System.out.println("{\"label\":" + str(label) + ",\"executions\":" + repeat
                + ",\"stable\":" + stable + ",\"columns\":" + header + ",\"rows\":" + last + "}");
    }

    static void update(Connection conn, String label, String sql) throws SQLException {
        String state = null, message = null;
        try (Statement st = conn.createStatement()) {
            st.executeUpdate(sql);
        } catch (SQLException e) {
            state = e.getSQLState();
            message = e.getMessage();
        }
        boolean answers;
        try (Statement st = conn.createStatement(); ResultSet rs = st.executeQuery("SELECT 1")) {
            answers = rs.next() && rs.getInt(1) == 1;
        } catch (SQLException e) {
            answers = false;
        }
        System.out.println("{\"label\":" + str(label) + ",\"sqlstate\":" + str(state)
                + ",\"message\":" + str(message) + ",\"then_select\":" + answers + "}");
    }

    static void bind(PreparedStatement ps, int i, String typed) throws SQLException {
        int colon = typed.indexOf(':');
        String type = typed.substring(0, colon), v = typed.substring(colon + 1);
        switch (type) {
            case "text" -> ps.setString(i, v);
            case "int8" -> ps.setLong(i, Long.parseLong(v));
            case "float8" -> ps.setDouble(i, Double.parseDouble(v));
            case "numeric" -> ps.setBigDecimal(i, new BigDecimal(v));
            case "bool" -> ps.setBoolean(i, Boolean.parseBoolean(v));
            case "date" -> ps.setObject(i, LocalDate.parse(v));
            case "timestamptz" -> ps.setObject(i, OffsetDateTime.parse(v));
            default -> throw new IllegalArgumentException("unknown parameter type " + type);
        }
    }

    static String cell(ResultSet rs, int c, String type) throws SQLException {
        String out = switch (type) {
            case "int2", "int4", "int8" -> Long.toString(rs.getLong(c));
            case "float4", "float8" -> {
                double d = rs.getDouble(c);
                yield Double.isFinite(d) ? Double.toString(d) : str(Double.toString(d));
            }
            case "numeric" -> {
                BigDecimal d = rs.getBigDecimal(c);
                yield d == null ? null : d.toPlainString();
            }
            case "bool" -> Boolean.toString(rs.getBoolean(c));
            case "date" -> {
                LocalDate d = rs.getObject(c, LocalDate.class);
                yield d == null ? null : str(d.toString());
            }
            case "timestamp" -> {
                LocalDateTime t = rs.getObject(c, LocalDateTime.class);
                yield t == null ? null : str(t.toString());
            }
            case "timestamptz" -> {
                OffsetDateTime t = rs.getObject(c, OffsetDateTime.class);
                yield t == null ? null : str(t.withOffsetSameInstant(ZoneOffset.UTC).toString());
            }
            default -> str(rs.getString(c));
        };
        return rs.wasNull() || out == null ? "null" : out;
    }

    /** A JSON string (or null). */
    static String str(String s) {
        if (s == null) return "null";
        StringBuilder b = new StringBuilder("\"");
        for (char ch : s.toCharArray()) {
            switch (ch) {
                case '"' -> b.append("\\\"");
                case '\\' -> b.append("\\\\");
                case '\n' -> b.append("\\n");
                case '\r' -> b.append("\\r");
                case '\t' -> b.append("\\t");
                default -> {
                    if (ch < 0x20) b.append(String.format("\\u%04x", (int) ch));
                    else b.append(ch);
                }
            }
        }
        return b.append('"').toString();
    }
}
