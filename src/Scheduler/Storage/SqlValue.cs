using Potluck.Protocol.Identity;

namespace Potluck.Scheduler.Storage;

/// <summary>
/// A value bound to a <see cref="SqliteStatement"/> parameter, unboxed: long, int and bool as INTEGER, double as REAL,
/// string as TEXT, byte[], <see cref="ReadOnlyMemory{T}"/> of bytes and a <see cref="PeerId"/>'s bytes as BLOB (bound from
/// where they lie, no copy on our side), null and <see cref="DBNull"/> as NULL. Each converts implicitly, so a call site
/// writes <c>("$seq", seq)</c>; only these types convert, so a type SQLite does not store is a compile error rather than
/// the exception it was with <c>object</c> values (whose every integer was boxed: about 2 KiB per lease-path task).
/// </summary>
internal readonly struct SqlValue
{
    private readonly ReadOnlyMemory<byte> _blob;
    private readonly string? _text;
    private readonly long _integer;
    private readonly double _real;

    private SqlValue(SqlType type, long integer = 0, double real = 0, string? text = null, ReadOnlyMemory<byte> blob = default)
    {
        Type = type;
        _integer = integer;
        _real = real;
        _text = text;
        _blob = blob;
    }

    /// <summary>SQL NULL.</summary>
    public static SqlValue Null => default;

    /// <summary>How SQLite stores it.</summary>
    public SqlType Type { get; }

    public long Integer => _integer;

    public double Real => _real;

    public string Text => _text ?? "";

    public ReadOnlySpan<byte> Blob => _blob.Span;

    public static implicit operator SqlValue(long value) => new(SqlType.Integer, integer: value);

    public static implicit operator SqlValue(int value) => new(SqlType.Integer, integer: value);

    public static implicit operator SqlValue(bool value) => new(SqlType.Integer, integer: value ? 1 : 0);

    public static implicit operator SqlValue(double value) => new(SqlType.Real, real: value);

    public static implicit operator SqlValue(string? value) => value is null ? Null : new(SqlType.Text, text: value);

    /// <summary>A blob; an empty array is an empty blob, never NULL.</summary>
    public static implicit operator SqlValue(byte[]? value) => value is null ? Null : new(SqlType.Blob, blob: value);

    /// <summary>A blob (empty: an empty blob).</summary>
    public static implicit operator SqlValue(ReadOnlyMemory<byte> value) => new(SqlType.Blob, blob: value);

    /// <summary>The peer id's bytes as a blob (what <see cref="PeerId.ToBytes"/> gives, without its copy).</summary>
    public static implicit operator SqlValue(PeerId value) => new(SqlType.Blob, blob: value.Memory);

#pragma warning disable IDE0060 // the value is the type: DBNull has one
    public static implicit operator SqlValue(DBNull value) => Null;
#pragma warning restore IDE0060

    public override string ToString() => Type switch
    {
        SqlType.Integer => _integer.ToString(System.Globalization.CultureInfo.InvariantCulture),
        SqlType.Real => _real.ToString(System.Globalization.CultureInfo.InvariantCulture),
        SqlType.Text => _text!,
        SqlType.Blob => Convert.ToHexString(_blob.Span),
        _ => "NULL",
    };
}

/// <summary>SQLite's storage classes, as a <see cref="SqlValue"/> is bound.</summary>
internal enum SqlType : byte
{
    Null = 0,
    Integer,
    Real,
    Text,
    Blob,
}
