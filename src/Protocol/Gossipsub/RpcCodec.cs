using Google.Protobuf;

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
        rpc = new Pb.RPC();
        if (body.Length > maxRpcSize)
        {
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
}
