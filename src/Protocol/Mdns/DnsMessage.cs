using System.Buffers.Binary;
using System.Text;

namespace Potluck.Protocol.Mdns;

public enum DnsRecordType : ushort
{
    A = 1,
    Ptr = 12,
    Txt = 16,
    Aaaa = 28,
    Srv = 33,
    Any = 255,
}

/// <summary>A question. <paramref name="UnicastResponse"/> is mDNS's QU bit (top bit of the class).</summary>
public sealed record DnsQuestion(string Name, DnsRecordType Type, bool UnicastResponse = false);

/// <summary>
/// A resource record of class IN. <see cref="Target"/> is set for PTR records, <see cref="Text"/> for TXT records;
/// <see cref="Data"/> always holds the raw rdata (with compression pointers unresolved for PTR).
/// </summary>
public sealed record DnsRecord(string Name, DnsRecordType Type, uint Ttl, byte[] Data, string? Target = null, IReadOnlyList<byte[]>? Text = null)
{
    public static DnsRecord Ptr(string name, string target, uint ttl) => new(name, DnsRecordType.Ptr, ttl, DnsMessage.EncodeName(target), target);

    public static DnsRecord Txt(string name, IReadOnlyList<byte[]> strings, uint ttl)
    {
        var data = new List<byte>();
        foreach (var s in strings)
        {
            if (s.Length > 255)
            {
                throw new ArgumentException("a TXT character-string is at most 255 bytes", nameof(strings));
            }
            data.Add((byte)s.Length);
            data.AddRange(s);
        }
        return new DnsRecord(name, DnsRecordType.Txt, ttl, [.. data], Text: strings);
    }
}

/// <summary>
/// A DNS message (RFC 1035 §4) as mDNS (RFC 6762) uses it. Decoding is bounded: a packet is at most
/// <see cref="MaxPacketSize"/> bytes, names at most 255 bytes with labels of at most 63, and compression pointers
/// must point strictly backwards (so they cannot loop) with at most <see cref="MaxPointerJumps"/> per name.
/// Nothing is allocated from a count in the header: records are read until the packet runs out.
/// Encoding writes names uncompressed.
/// </summary>
public sealed record DnsMessage(ushort Id, bool IsResponse, bool IsAuthoritative, IReadOnlyList<DnsQuestion> Questions,
    IReadOnlyList<DnsRecord> Answers, IReadOnlyList<DnsRecord> Authority, IReadOnlyList<DnsRecord> Additional)
{
    /// <summary>RFC 6762 §17: an mDNS packet is at most 9000 bytes.</summary>
    public const int MaxPacketSize = 9000;
    public const int MaxNameLength = 255;
    public const int MaxLabelLength = 63;
    public const int MaxPointerJumps = 16;
    private const int HeaderSize = 12;
    private const ushort ClassIn = 1;

    public static DnsMessage Query(params DnsQuestion[] questions) => new(0, false, false, questions, [], [], []);

    public static DnsMessage Response(IReadOnlyList<DnsRecord> answers, IReadOnlyList<DnsRecord> additional) =>
        new(0, true, true, [], answers, [], additional);

    /// <summary>Decodes one datagram: <see cref="DecodeStatus.Done"/> or <see cref="DecodeStatus.Invalid"/> with a reason.</summary>
    public static DecodeStatus TryDecode(ReadOnlySpan<byte> packet, out DnsMessage? message, out string error)
    {
        message = null;
        error = "";
        if (packet.Length > MaxPacketSize)
        {
            error = "packet over 9000 bytes";
            return DecodeStatus.Invalid;
        }
        if (packet.Length < HeaderSize)
        {
            error = "shorter than the header";
            return DecodeStatus.Invalid;
        }
        var id = BinaryPrimitives.ReadUInt16BigEndian(packet);
        var flags = BinaryPrimitives.ReadUInt16BigEndian(packet[2..]);
        Span<int> counts = stackalloc int[4];
        for (var i = 0; i < 4; i++)
        {
            counts[i] = BinaryPrimitives.ReadUInt16BigEndian(packet[(4 + 2 * i)..]);
        }
        var offset = HeaderSize;
        var questions = new List<DnsQuestion>();
        for (var i = 0; i < counts[0]; i++)
        {
            if (!TryReadName(packet, ref offset, out var name, out error) || offset + 4 > packet.Length)
            {
                error = error.Length > 0 ? error : "truncated question";
                return DecodeStatus.Invalid;
            }
            var type = BinaryPrimitives.ReadUInt16BigEndian(packet[offset..]);
            var cls = BinaryPrimitives.ReadUInt16BigEndian(packet[(offset + 2)..]);
            offset += 4;
            questions.Add(new DnsQuestion(name, (DnsRecordType)type, (cls & 0x8000) != 0));
        }
        var sections = new List<DnsRecord>[3];
        for (var s = 0; s < 3; s++)
        {
            sections[s] = [];
            for (var i = 0; i < counts[s + 1]; i++)
            {
                if (!TryReadRecord(packet, ref offset, out var record, out error))
                {
                    return DecodeStatus.Invalid;
                }
                sections[s].Add(record);
            }
        }
        message = new DnsMessage(id, (flags & 0x8000) != 0, (flags & 0x0400) != 0, questions, sections[0], sections[1], sections[2]);
        return DecodeStatus.Done;
    }

    private static bool TryReadRecord(ReadOnlySpan<byte> packet, ref int offset, out DnsRecord record, out string error)
    {
        record = null!;
        if (!TryReadName(packet, ref offset, out var name, out error))
        {
            return false;
        }
        if (offset + 10 > packet.Length)
        {
            error = "truncated record header";
            return false;
        }
        var type = (DnsRecordType)BinaryPrimitives.ReadUInt16BigEndian(packet[offset..]);
        var ttl = BinaryPrimitives.ReadUInt32BigEndian(packet[(offset + 4)..]);
        var length = BinaryPrimitives.ReadUInt16BigEndian(packet[(offset + 8)..]);
        offset += 10;
        if (offset + length > packet.Length)
        {
            error = "rdata runs past the packet";
            return false;
        }
        var dataStart = offset;
        var data = packet.Slice(offset, length).ToArray();
        offset += length;
        string? target = null;
        List<byte[]>? text = null;
        if (type == DnsRecordType.Ptr)
        {
            var at = dataStart;
            if (!TryReadName(packet, ref at, out var t, out error) || at != dataStart + length)
            {
                error = error.Length > 0 ? error : "PTR rdata is not one name";
                return false;
            }
            target = t;
        }
        else if (type == DnsRecordType.Txt)
        {
            text = [];
            var at = 0;
            while (at < data.Length)
            {
                var n = data[at];
                if (at + 1 + n > data.Length)
                {
                    error = "TXT string runs past its record";
                    return false;
                }
                text.Add(data.AsSpan(at + 1, n).ToArray());
                at += 1 + n;
            }
        }
        record = new DnsRecord(name, type, ttl, data, target, text);
        return true;
    }

    /// <summary>Reads a possibly compressed name; on success <paramref name="offset"/> is past its in-place part.</summary>
    internal static bool TryReadName(ReadOnlySpan<byte> packet, ref int offset, out string name, out string error)
    {
        name = "";
        error = "";
        var builder = new StringBuilder();
        var position = offset;
        var jumps = 0;
        var resumeAt = -1;
        var lowestSeen = offset;
        var length = 0;
        while (true)
        {
            if (position >= packet.Length)
            {
                error = "name runs past the packet";
                return false;
            }
            var b = packet[position];
            if (b == 0)
            {
                position++;
                break;
            }
            switch (b & 0xC0)
            {
                case 0xC0:
                {
                    if (position + 1 >= packet.Length)
                    {
                        error = "truncated compression pointer";
                        return false;
                    }
                    var pointer = ((b & 0x3F) << 8) | packet[position + 1];
                    // Strictly backwards from everything read so far: no pointer can revisit a byte, so no loops.
                    if (pointer >= lowestSeen || ++jumps > MaxPointerJumps)
                    {
                        error = "compression pointer does not point backwards";
                        return false;
                    }
                    if (resumeAt < 0)
                    {
                        resumeAt = position + 2;
                    }
                    position = pointer;
                    lowestSeen = pointer;
                    continue;
                }
                case 0x00:
                {
                    if (position + 1 + b > packet.Length)
                    {
                        error = "label runs past the packet";
                        return false;
                    }
                    length += b + 1;
                    if (length > MaxNameLength)
                    {
                        error = "name over 255 bytes";
                        return false;
                    }
                    if (builder.Length > 0)
                    {
                        builder.Append('.');
                    }
                    foreach (var c in packet.Slice(position + 1, b))
                    {
                        // Names here are ASCII service labels; other bytes are kept as escapes so they cannot alias.
                        if (c is >= 0x21 and <= 0x7E && c != (byte)'.' && c != (byte)'\\')
                        {
                            builder.Append((char)c);
                        }
                        else
                        {
                            builder.Append('\\').Append(c.ToString("D3"));
                        }
                    }
                    position += 1 + b;
                    continue;
                }
                default:
                    error = "reserved label type";
                    return false;
            }
        }
        offset = resumeAt >= 0 ? resumeAt : position;
        name = builder.ToString();
        return true;
    }

    public byte[] Encode()
    {
        var buffer = new List<byte>(512);
        void U16(int v)
        {
            buffer.Add((byte)(v >> 8));
            buffer.Add((byte)v);
        }
        U16(Id);
        U16((IsResponse ? 0x8000 : 0) | (IsAuthoritative ? 0x0400 : 0));
        U16(Questions.Count);
        U16(Answers.Count);
        U16(Authority.Count);
        U16(Additional.Count);
        foreach (var q in Questions)
        {
            buffer.AddRange(EncodeName(q.Name));
            U16((int)q.Type);
            U16(ClassIn | (q.UnicastResponse ? 0x8000 : 0));
        }
        foreach (var r in Answers.Concat(Authority).Concat(Additional))
        {
            buffer.AddRange(EncodeName(r.Name));
            U16((int)r.Type);
            U16(ClassIn);
            U16((int)(r.Ttl >> 16));
            U16((int)(r.Ttl & 0xFFFF));
            U16(r.Data.Length);
            buffer.AddRange(r.Data);
        }
        if (buffer.Count > MaxPacketSize)
        {
            throw new InvalidOperationException("the message does not fit in one mDNS packet");
        }
        return [.. buffer];
    }

    /// <summary>Encodes a dotted name of ASCII labels (uncompressed).</summary>
    public static byte[] EncodeName(string name)
    {
        var bytes = new List<byte>();
        foreach (var label in name.TrimEnd('.').Split('.', StringSplitOptions.RemoveEmptyEntries))
        {
            var encoded = Encoding.ASCII.GetBytes(label);
            if (encoded.Length > MaxLabelLength)
            {
                throw new ArgumentException("a DNS label is at most 63 bytes", nameof(name));
            }
            bytes.Add((byte)encoded.Length);
            bytes.AddRange(encoded);
        }
        bytes.Add(0);
        if (bytes.Count > MaxNameLength)
        {
            throw new ArgumentException("a DNS name is at most 255 bytes", nameof(name));
        }
        return [.. bytes];
    }
}
