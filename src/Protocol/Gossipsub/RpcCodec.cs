using System.Buffers;
using System.IO.Pipelines;
using Google.Protobuf;
using Potluck.Protocol.Framing;

namespace Potluck.Protocol.Gossipsub;

/// <summary>
/// Decodes and encodes gossipsub RPC bodies (the framing is <see cref="Framing.LengthPrefixed"/>). Decoding
/// never throws on remote input: it checks the size first and reports <see cref="DecodeStatus.Invalid"/> with
/// a reason for anything that is not a well-formed RPC. Counts inside a well-formed RPC are the router's business.
/// </summary>
internal static class RpcCodec
{
    public static DecodeStatus TryDecode(ReadOnlySpan<byte> body, int maxRpcSize, out Pb.RPC rpc, out string? error)
    {
        if (body.Length > maxRpcSize)
        {
            rpc = new Pb.RPC();
            error = $"RPC of {body.Length} bytes is over the {maxRpcSize}-byte limit";
            return DecodeStatus.Invalid;
        }
        try
        {
            rpc = Pb.RPC.Parser.ParseFrom(body);
            error = null;
            return DecodeStatus.Done;
        }
        catch (InvalidProtocolBufferException e)
        {
            rpc = new Pb.RPC();
            error = "malformed RPC: " + e.Message;
            return DecodeStatus.Invalid;
        }
    }

    public static byte[] Encode(Pb.RPC rpc) => rpc.ToByteArray();

    /// <summary>
    /// Writes <paramref name="rpc"/> length-prefixed to <paramref name="output"/>: the same bytes, in the same writes, as
    /// <see cref="LengthPrefixed.Write"/> of <see cref="Encode"/>, without an array per RPC (encoded on the stack, or in a
    /// pooled buffer when larger than <see cref="StackLimit"/>). The outbound queue holds the RPC itself until its writer
    /// runs, so a forwarded message is encoded once per peer into the stream and nowhere else.
    /// </summary>
    public static void Write(PipeWriter output, Pb.RPC rpc)
    {
        var size = rpc.CalculateSize();
        if (size <= StackLimit)
        {
            Span<byte> bytes = stackalloc byte[size];
            rpc.WriteTo(bytes);
            LengthPrefixed.Write(output, bytes);
            return;
        }
        var rented = ArrayPool<byte>.Shared.Rent(size);
        try
        {
            var bytes = rented.AsSpan(0, size);
            rpc.WriteTo(bytes);
            LengthPrefixed.Write(output, bytes);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(rented);
        }
    }

    /// <summary>RPCs up to this size are encoded on the stack by <see cref="Write"/>.</summary>
    internal const int StackLimit = 1024;
}
