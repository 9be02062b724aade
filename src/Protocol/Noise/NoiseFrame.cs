using System.Buffers;

namespace Potluck.Protocol.Noise;

/// <summary>
/// The libp2p Noise wire format: every Noise message is preceded by its length as a 16-bit big-endian integer,
/// so no message exceeds 65535 bytes and a transport message carries at most 65519 plaintext bytes.
/// </summary>
internal static class NoiseFrame
{
    public const int HeaderLength = 2;
    public const int MaxMessageLength = NoiseHandshakeState.MaxMessageLength;
    public const int MaxPlaintextLength = MaxMessageLength - NoiseCipherState.TagLength;

    /// <summary>
    /// Reads one length-prefixed message from the front of <paramref name="buffer"/>. The length is at most
    /// 65535 by construction; one under <paramref name="minimumLength"/> is <see cref="DecodeStatus.Invalid"/>.
    /// </summary>
    public static DecodeStatus TryRead(in ReadOnlySequence<byte> buffer, int minimumLength,
                                       out ReadOnlySequence<byte> message, out SequencePosition end)
    {
        message = default;
        end = buffer.Start;
        var reader = new SequenceReader<byte>(buffer);
        if (!reader.TryReadBigEndian(out short raw))
        {
            return DecodeStatus.NeedMoreData;
        }
        var length = (ushort)raw;
        if (length < minimumLength)
        {
            return DecodeStatus.Invalid;
        }
        if (reader.Remaining < length)
        {
            return DecodeStatus.NeedMoreData;
        }
        message = buffer.Slice(reader.Position, length);
        end = message.End;
        return DecodeStatus.Done;
    }
}
