using System.Buffers;
using System.Diagnostics;
using System.Text;
using Google.Protobuf;
using Potluck.Protocol;
using Potluck.Protocol.Framing;
using Potluck.Protocol.Gossipsub;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Kademlia;
using Potluck.Protocol.Mdns;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Multistream;
using Potluck.Protocol.Noise;
using Potluck.Protocol.Pnet;
using Potluck.Protocol.Relay;
using Potluck.Protocol.Runtime;
using Potluck.Protocol.Yamux;
using Potluck.Scheduler.Advertising;
using Potluck.Scheduler.Credits;
using Potluck.Scheduler.Execution;
using Potluck.Scheduler.Leasing;
using Potluck.Scheduler.Providing;
using Potluck.Scheduler.Verification;

namespace Potluck.Fuzz;

/// <summary>A decoder as a remote reaches it: true when the input was accepted, false when refused with a status.</summary>
internal sealed record Target(string Name, byte[][] Seeds, Func<byte[], bool> Run);

internal static class Targets
{
    private static readonly PrivateKey Key = PrivateKey.FromRandom(new Random(1));
    private static readonly PrivateKey Other = PrivateKey.FromRandom(new Random(2));

    public static IEnumerable<Target> All()
    {
        var peer = Key.PeerId;
        var addresses = new[]
        {
            Multiaddr.Parse($"/ip4/127.0.0.1/tcp/4001/p2p/{peer}"), Multiaddr.Parse("/ip6/::1/tcp/4100"),
            Multiaddr.Parse("/dns4/example.com/tcp/4001"), Multiaddr.Parse("/memory/5"), Multiaddr.Parse("/ip4/10.0.0.1/udp/4001/quic-v1"),
        };

        yield return new("varint", [Varint.Encode(0), Varint.Encode(127), Varint.Encode(300), Varint.Encode(long.MaxValue), Varint.Encode(1UL << 62), [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]],
            b => Varint.TryRead(b, out _, out _) == DecodeStatus.Done);

        yield return new("multiaddr (bytes)", addresses.Select(a => a.ToBytes()).ToArray(), b =>
        {
            if (!Multiaddr.TryFromBytes(b, out var a))
            {
                return false;
            }
            _ = a.ToString();
            return true;
        });

        yield return new("multiaddr (text)", addresses.Select(a => Encoding.UTF8.GetBytes(a.ToString())).ToArray(),
            b => Multiaddr.TryParse(Encoding.UTF8.GetString(b), out _, out _));

        yield return new("multistream", [Framed("/multistream/1.0.0\n"), Framed("/yamux/1.0.0\n"), Framed("na\n"), Framed("ls\n"), [.. Framed("/noise\n"), .. Framed("/ipfs/id/1.0.0\n")]], b =>
        {
            var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(b));
            var accepted = false;
            while (true)
            {
                var status = MultistreamMessage.TryRead(ref reader, 1024, out _, out _);
                if (status != DecodeStatus.Done)
                {
                    return accepted && status == DecodeStatus.NeedMoreData;
                }
                accepted = true;
            }
        });

        yield return new("noise frame", [[0x00, 0x10, .. new byte[16]], [0x00, 0x20, .. new byte[32]], [0xFF, 0xFF, 1, 2, 3]], b =>
        {
            var status = NoiseFrame.TryRead(new ReadOnlySequence<byte>(b), 16, out _, out _);
            return status == DecodeStatus.Done;
        });

        var staticKey = new byte[32];
        new Random(3).NextBytes(staticKey);
        var payload = NoisePayload.Encode(Key.PublicKey, Key.Sign(NoisePayload.SignedData(staticKey)), ["/yamux/1.0.0"]);
        yield return new("noise handshake payload", [payload, NoisePayload.Encode(Other.PublicKey, new byte[64], [])], b =>
        {
            NoisePayload.Verify(b, staticKey, new NoiseOptions());
            return true;
        });

        yield return new("yamux frames", [Yamux(0, 1, 1, 5), Yamux(1, 2, 3, 256 * 1024), Yamux(2, 1, 0, 7), Yamux(3, 0, 0, 0), [.. Yamux(0, 0, 1, 3), 1, 2, 3]], b =>
        {
            var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(b));
            var accepted = false;
            while (true)
            {
                var status = YamuxFrame.TryRead(ref reader, 256 * 1024, out _, out _, out _);
                if (status != DecodeStatus.Done)
                {
                    return accepted;
                }
                accepted = true;
            }
        });

        yield return new("length-prefixed", [[3, 1, 2, 3], [0], [0x80, 0x01, .. new byte[128]]], b =>
        {
            var sequence = new ReadOnlySequence<byte>(b);
            return LengthPrefixed.TryRead(ref sequence, 1024, out _) == DecodeStatus.Done;
        });

        var identify = new Potluck.Protocol.Identify.Pb.Identify
        {
            ProtocolVersion = "ipfs/0.1.0",
            AgentVersion = "potluck/1",
            PublicKey = ByteString.CopyFrom(Key.PublicKey.ToProtobuf()),
            ObservedAddr = ByteString.CopyFrom(addresses[1].ToBytes()),
        };
        identify.ListenAddrs.AddRange(addresses.Select(a => ByteString.CopyFrom(a.ToBytes())));
        identify.Protocols.AddRange(["/ipfs/id/1.0.0", "/ipfs/ping/1.0.0", "/meshsub/1.1.0"]);
        yield return new("identify (protobuf)", [identify.ToByteArray()], b =>
        {
            var message = Potluck.Protocol.Identify.Pb.Identify.Parser.ParseFrom(b); // the service maps its exception to a violation
            foreach (var a in message.ListenAddrs)
            {
                Multiaddr.TryFromBytes(a.Span, out _);
            }
            return !message.HasPublicKey || PublicKey.TryFromProtobuf(message.PublicKey.Span, out _);
        });

        var rpc = new Potluck.Protocol.Gossipsub.Pb.RPC();
        rpc.Subscriptions.Add(new Potluck.Protocol.Gossipsub.Pb.RPC.Types.SubOpts { Subscribe = true, Topicid = "potluck/ads/1" });
        rpc.Publish.Add(new Potluck.Protocol.Gossipsub.Pb.Message
        {
            From = ByteString.CopyFrom(peer.ToBytes()), Data = ByteString.CopyFromUtf8("hello"), Seqno = ByteString.CopyFrom(new byte[8]),
            Topic = "potluck/ads/1", Signature = ByteString.CopyFrom(new byte[64]), Key = ByteString.CopyFrom(Key.PublicKey.ToProtobuf()),
        });
        rpc.Control = new Potluck.Protocol.Gossipsub.Pb.ControlMessage();
        rpc.Control.Ihave.Add(new Potluck.Protocol.Gossipsub.Pb.ControlIHave { TopicID = "t", MessageIDs = { ByteString.CopyFromUtf8("id1") } });
        rpc.Control.Graft.Add(new Potluck.Protocol.Gossipsub.Pb.ControlGraft { TopicID = "t" });
        yield return new("gossipsub RPC (protobuf)", [rpc.ToByteArray()], b => RpcCodec.TryDecode(b, 1 << 20, out _, out _) == DecodeStatus.Done);

        // Gossipsub v1.2 IDONTWANT: the control message as the router reads it (ids bounded in count and length).
        var idontwant = new Potluck.Protocol.Gossipsub.Pb.RPC { Control = new Potluck.Protocol.Gossipsub.Pb.ControlMessage() };
        idontwant.Control.Idontwant.Add(new Potluck.Protocol.Gossipsub.Pb.ControlIDontWant { MessageIDs = { ByteString.CopyFrom(new byte[20]), ByteString.CopyFromUtf8("id-2") } });
        var idontwantWithMessage = idontwant.Clone();
        idontwantWithMessage.Publish.Add(rpc.Publish[0]);
        yield return new("gossipsub IDONTWANT (protobuf)", [idontwant.ToByteArray(), idontwantWithMessage.ToByteArray()], b =>
        {
            if (RpcCodec.TryDecode(b, 1 << 20, out var decoded, out _) != DecodeStatus.Done || decoded.Control is null)
            {
                return false;
            }
            var ids = 0;
            foreach (var entry in decoded.Control.Idontwant)
            {
                foreach (var id in entry.MessageIDs)
                {
                    ids += id.Length is > 0 and <= 1024 ? 1 : 0;
                }
            }
            return ids > 0;
        });

        var kad = new Potluck.Protocol.Kademlia.Pb.Message { Type = Potluck.Protocol.Kademlia.Pb.Message.Types.MessageType.FindNode, Key = ByteString.CopyFrom(peer.ToBytes()) };
        var kadPeer = new Potluck.Protocol.Kademlia.Pb.Message.Types.Peer { Id = ByteString.CopyFrom(peer.ToBytes()) };
        kadPeer.Addrs.Add(ByteString.CopyFrom(addresses[0].ToBytes()));
        kad.CloserPeers.Add(kadPeer);
        var kadPut = new Potluck.Protocol.Kademlia.Pb.Message
        {
            Type = Potluck.Protocol.Kademlia.Pb.Message.Types.MessageType.PutValue, Key = ByteString.CopyFromUtf8("/pk/x"),
            Record = new Potluck.Protocol.Kademlia.Pb.Record { Key = ByteString.CopyFromUtf8("/pk/x"), Value = ByteString.CopyFrom(Key.PublicKey.ToProtobuf()) },
        };
        yield return new("kademlia message (protobuf)", [kad.ToByteArray(), kadPut.ToByteArray()], b => KadMessages.TryParse(b, new KademliaOptions(), out _, out _));

        // Circuit relay v2: HOP (a relay reads it from a client; a client reads the relay's answer), STOP (a client reads
        // it from its relay), and the signed reservation voucher inside a reservation.
        var voucher = RelayVoucher.Create(Key, Other.PeerId, 1_900_000_000);
        var hopReserve = new Potluck.Protocol.Relay.Pb.HopMessage { Type = Potluck.Protocol.Relay.Pb.HopMessage.Types.Type.Reserve };
        var hopConnect = new Potluck.Protocol.Relay.Pb.HopMessage
        {
            Type = Potluck.Protocol.Relay.Pb.HopMessage.Types.Type.Connect,
            Peer = new Potluck.Protocol.Relay.Pb.Peer { Id = ByteString.CopyFrom(peer.ToBytes()), Addrs = { ByteString.CopyFrom(addresses[0].ToBytes()) } },
        };
        var hopStatus = new Potluck.Protocol.Relay.Pb.HopMessage
        {
            Type = Potluck.Protocol.Relay.Pb.HopMessage.Types.Type.Status, Status = Potluck.Protocol.Relay.Pb.Status.Ok,
            Reservation = new Potluck.Protocol.Relay.Pb.Reservation { Expire = 1_900_000_000, Addrs = { ByteString.CopyFrom(addresses[0].ToBytes()) }, Voucher = ByteString.CopyFrom(voucher) },
            Limit = new Potluck.Protocol.Relay.Pb.Limit { Duration = 120, Data = 1 << 17 },
        };
        yield return new("relay HOP message (protobuf)", [hopReserve.ToByteArray(), hopConnect.ToByteArray(), hopStatus.ToByteArray()], b =>
        {
            var message = Potluck.Protocol.Relay.Pb.HopMessage.Parser.ParseFrom(b); // both ends map the exception to a violation
            if (message.Peer is { } p && !PeerId.TryFromBytes(p.Id.Span, out _))
            {
                return false;
            }
            foreach (var a in (message.Peer?.Addrs ?? []).Concat(message.Reservation?.Addrs ?? []))
            {
                Multiaddr.TryFromBytes(a.Span, out _);
            }
            return message.Reservation is not { HasVoucher: true } r || RelayVoucher.TryVerify(r.Voucher.Span, peer, Other.PeerId, out _);
        });
        var stop = new Potluck.Protocol.Relay.Pb.StopMessage
        {
            Type = Potluck.Protocol.Relay.Pb.StopMessage.Types.Type.Connect,
            Peer = new Potluck.Protocol.Relay.Pb.Peer { Id = ByteString.CopyFrom(Other.PeerId.ToBytes()) },
            Limit = new Potluck.Protocol.Relay.Pb.Limit { Duration = 120, Data = 1 << 17 },
        };
        yield return new("relay STOP message (protobuf)", [stop.ToByteArray()], b =>
        {
            var message = Potluck.Protocol.Relay.Pb.StopMessage.Parser.ParseFrom(b);
            return message.Peer is { } p && PeerId.TryFromBytes(p.Id.Span, out _);
        });
        yield return new("relay voucher (protobuf)", [voucher], b => RelayVoucher.TryVerify(b, peer, Other.PeerId, out _));

        // AutoNAT v2: what a server reads from a client (dial request, dial data) and a client from a server, and the
        // dial-back nonce on a fresh connection.
        var autonatSeeds = new[]
        {
            new Potluck.Protocol.AutoNat.Pb.Message { DialRequest = new Potluck.Protocol.AutoNat.Pb.DialRequest { Nonce = 0x1234_5678_9abc_def0UL, Addrs = { ByteString.CopyFrom(addresses[0].ToBytes()), ByteString.CopyFrom(addresses[1].ToBytes()) } } },
            new Potluck.Protocol.AutoNat.Pb.Message { DialResponse = new Potluck.Protocol.AutoNat.Pb.DialResponse { Status = Potluck.Protocol.AutoNat.Pb.DialResponse.Types.ResponseStatus.Ok, AddrIdx = 1, DialStatus = Potluck.Protocol.AutoNat.Pb.DialStatus.Ok } },
            new Potluck.Protocol.AutoNat.Pb.Message { DialDataRequest = new Potluck.Protocol.AutoNat.Pb.DialDataRequest { AddrIdx = 0, NumBytes = 40_000 } },
            new Potluck.Protocol.AutoNat.Pb.Message { DialDataResponse = new Potluck.Protocol.AutoNat.Pb.DialDataResponse { Data = ByteString.CopyFrom(new byte[512]) } },
        }.Select(m => m.ToByteArray()).ToArray();
        yield return new("autonat v2 message (protobuf)", autonatSeeds, b =>
        {
            var message = Potluck.Protocol.AutoNat.Pb.Message.Parser.ParseFrom(b); // the service maps the exception to a violation
            if (message.DialRequest is { } request)
            {
                var valid = 0;
                foreach (var a in request.Addrs)
                {
                    valid += Multiaddr.TryFromBytes(a.Span, out _) ? 1 : 0;
                }
                return valid > 0;
            }
            return message.MsgCase != Potluck.Protocol.AutoNat.Pb.Message.MsgOneofCase.None;
        });
        yield return new("autonat dial-back (protobuf)", [new Potluck.Protocol.AutoNat.Pb.DialBack { Nonce = 42 }.ToByteArray(), new Potluck.Protocol.AutoNat.Pb.DialBackResponse().ToByteArray()],
            b => Potluck.Protocol.AutoNat.Pb.DialBack.Parser.ParseFrom(b).Nonce != 0);

        yield return new("signed peer record (protobuf)", [[0x0A, 0x24, .. Key.PublicKey.ToProtobuf()]], b => SignedPeerRecord.TryReadAddresses(b, peer, out _));

        yield return new("public key (protobuf)", [Key.PublicKey.ToProtobuf(), Other.PublicKey.ToProtobuf()], b => PublicKey.TryFromProtobuf(b, out _));

        yield return new("swarm key", [Encoding.ASCII.GetBytes(SwarmKey.Generate().ToFileText())], b => SwarmKey.TryParse(b, out _, out _));

        var query = DnsMessage.Query(new DnsQuestion("_p2p._udp.local", DnsRecordType.Ptr)).Encode();
        var answer = DnsMessage.Response([DnsRecord.Ptr("_p2p._udp.local", "abc._p2p._udp.local", 120)],
            [DnsRecord.Txt("abc._p2p._udp.local", [Encoding.ASCII.GetBytes("dnsaddr=" + addresses[0])], 120)]).Encode();
        yield return new("DNS message", [query, answer], b => DnsMessage.TryDecode(b, out _, out _) == DecodeStatus.Done);

        var ad = AdvertisementCodec.Sign(new Advertisement
        {
            PeerId = peer.ToBytes(), ListenAddresses = [addresses[0].ToBytes()], Sequence = 1,
            IssuedAtUnixMs = 1_900_000_000_000, ExpiresAtUnixMs = 1_900_000_300_000, Cores = 4, AvailableCores = 4, MemoryBytes = 1L << 30,
            SpeedFuelPerSecond = 1_000_000, PricePerMegaFuel = 10, RuntimeVersion = "wasmtime 50.0.1", Policy = ProviderPolicyFlags.AcceptsUnknownModules,
        }, Key);
        yield return new("advertisement (MessagePack)", [ad], b => AdvertisementCodec.TryOpen(b, new AdvertisementOptions(), out _) == AdVerdict.Accepted);

        var leaseOptions = new LeaseOptions();
        var request = new LeaseRequest
        {
            RequestId = 7, ModuleHash = new byte[32], ModuleSize = 1000, InputHash = new byte[32], InputSize = 10, FuelLimit = 1_000_000,
            MemoryLimitBytes = 1 << 20, DeadlineUnixMs = 1_900_000_000_000, MaxPricePerMegaFuel = 10,
        };
        var attestation = SignedAttestation.Create(new Attestation
        {
            LeaseId = [0, 0, 0, 0, 0, 0, 0, 7], Requester = Other.PeerId.ToBytes(), Provider = peer.ToBytes(), ModuleHash = new byte[32],
            InputHash = new byte[32], OutputHash = new byte[32], OutputSize = 65, FuelUsed = 123_456, Outcome = AttestedOutcome.Exited, ExitCode = 0,
            TimestampUnixMs = 1_900_000_000_000,
        }, Key);
        var receipt = SignedReceipt.Create(Receipt.For(attestation, 10, DateTimeOffset.FromUnixTimeMilliseconds(1_900_000_001_000)), Other);
        var ack = MessagePack.MessagePackSerializer.Serialize(new ReceiptAck { Status = ReceiptAckStatus.Recorded, Detail = "" });
        var debitNote = SignedDebitNote.Create(new DebitNote
        {
            LeaseId = [0, 0, 0, 0, 0, 0, 0, 7], Requester = Other.PeerId.ToBytes(), Provider = peer.ToBytes(), SliceIndex = 2,
            CumulativeFuel = 3UL << 30, PricePerMillionFuel = 10, CumulativeAmount = 32_213, PaidBefore = 21_475, TimestampUnixMs = 1_900_000_000_000,
        }, Key);
        LeaseMessage[] leaseMessages =
        [
            request,
            new LeaseOffer { RequestId = 7, Terms = MessagePack.MessagePackSerializer.Serialize(new LeaseTerms { FuelLimit = 1_000_000, MemoryLimitBytes = 1 << 20 }), ProviderSignature = new byte[64] },
            new LeaseReject { RequestId = 7, Reason = LeaseRejectReason.Busy, Detail = "busy" },
            new LeaseAccept { RequestId = 7, RequesterSignature = new byte[64] },
            new LeaseData { RequestId = 7 },
            new LeaseHeartbeat { RequestId = 7 },
            new LeaseCancel { RequestId = 7 },
            new LeaseResult { RequestId = 7, Status = ExecutionStatus.Success, FuelUsed = 123_456, OutputHash = new byte[32], OutputSize = 3, Output = [1, 2, 3], Attestation = attestation.EnvelopeBytes },
            new LeaseReceipt { RequestId = 7, Envelope = receipt.EnvelopeBytes },
            new LeaseReceiptAck { RequestId = 7, Ack = ack },
            new LeaseDebitNote { RequestId = 7, Note = debitNote.EnvelopeBytes },
        ];
        var leaseSeeds = leaseMessages.Select(LeaseCodec.Serialize).ToArray();
        yield return new("lease message (MessagePack)", leaseSeeds, b => LeaseCodec.TryDeserialize(b, leaseOptions, out _) == DecodeStatus.Done);
        yield return new("lease frame", leaseMessages.Select(LeaseCodec.EncodeFrame).ToArray(), b =>
        {
            var sequence = new ReadOnlySequence<byte>(b);
            return LeaseCodec.TryReadFrame(ref sequence, leaseOptions, out _) == DecodeStatus.Done;
        });
        var terms = MessagePack.MessagePackSerializer.Serialize(new LeaseTerms { FuelLimit = 1_000_000, MemoryLimitBytes = 1 << 20 });
        yield return new("lease terms (MessagePack)", [terms], b => LeaseCodec.TryDecodeTerms(b, leaseOptions, out _));
        // Signed terms as fraud proofs and lease audits carry them, with the audit commitment and rate the trust issue added.
        var auditedTerms = MessagePack.MessagePackSerializer.Serialize(new LeaseTerms
        {
            RequestId = 7, Provider = peer.ToBytes(), Requester = Other.PeerId.ToBytes(), ModuleHash = new byte[32], InputHash = new byte[32],
            FuelLimit = 1_000_000, MemoryLimitBytes = 1 << 20, PricePerMegaFuel = 10, RuntimeVersion = "wasmtime 50.0.1 fuel/2",
            AuditCommitment = new byte[32], AuditRatePpm = 50_000,
        });
        var signedTerms = MessagePack.MessagePackSerializer.Serialize(new SignedLeaseTerms { Terms = auditedTerms, ProviderSignature = new byte[64], RequesterSignature = new byte[64] });
        yield return new("signed lease terms (MessagePack)", [signedTerms], b => LeaseCodec.TryDecodeSignedTerms(b, leaseOptions, out _, out _));

        var credits = new CreditsOptions();
        var envelopes = new[]
        {
            SignedEnvelope.Seal(Key, SignatureDomains.Receipt, terms).Encode(),
            SignedEnvelope.Seal(Key, SignatureDomains.Attestation, leaseSeeds[0]).Encode(),
            receipt.EnvelopeBytes,
            attestation.EnvelopeBytes,
            debitNote.EnvelopeBytes,
        };
        yield return new("signed envelope (MessagePack)", envelopes, b => SignedEnvelope.TryDecode(b, credits, out _) == EnvelopeStatus.Valid);
        yield return new("receipt (MessagePack)", envelopes, b => SignedReceipt.Decode(b, credits).IsValid);
        yield return new("attestation (MessagePack)", envelopes, b => SignedAttestation.Decode(b, credits).IsValid);
        yield return new("debit note (MessagePack)", envelopes, b => SignedDebitNote.Decode(b, credits).IsValid);
        yield return new("receipt acknowledgement (MessagePack)", [ack, MessagePack.MessagePackSerializer.Serialize(new ReceiptAck { Status = ReceiptAckStatus.AlreadyRecorded, Detail = "again" })],
            b => ReceiptProtocol.TryDecodeAck(b, out _));

        var fraudOptions = new FraudOptions();
        var proof = FraudProof.Create(new SignedLeaseTerms { Terms = terms, ProviderSignature = new byte[64], RequesterSignature = new byte[64] }, envelopes[1], new byte[] { 0, 0x61, 0x73, 0x6d, 1, 0, 0, 0 },
            new TaskPayload(["1"], new byte[] { 1, 2 }).Encode(), auditSecret: Enumerable.Range(0, LeaseAudit.SecretLength).Select(i => (byte)i).ToArray()).Encode();
        // A proof signed by both parties whose reveal checks, and the same revealing another secret: mutations reach the reveal.
        var proofModule = new byte[] { 0, 0x61, 0x73, 0x6d, 1, 0, 0, 0 };
        var proofInput = new TaskPayload(["1"], new byte[] { 1, 2 }).Encode();
        var proofSecret = Enumerable.Repeat((byte)9, LeaseAudit.SecretLength).ToArray();
        var proofTermsBytes = LeaseCodec.SerializeTerms(new LeaseTerms
        {
            RequestId = 7, Provider = peer.ToBytes(), Requester = Other.PeerId.ToBytes(), ModuleHash = System.Security.Cryptography.SHA256.HashData(proofModule),
            ModuleSize = proofModule.Length, InputHash = System.Security.Cryptography.SHA256.HashData(proofInput), InputSize = proofInput.Length,
            FuelLimit = 1_000_000, MemoryLimitBytes = 1 << 20, PricePerMegaFuel = 10, HeartbeatIntervalMs = 5000, RuntimeVersion = ComputeRuntime.Version,
            AuditCommitment = LeaseAudit.Commit(proofSecret), AuditRatePpm = LeaseAudit.AlwaysPpm,
        });
        var proofTerms = new SignedLeaseTerms
        {
            Terms = proofTermsBytes, ProviderSignature = SignedLeaseTerms.SignProvider(proofTermsBytes, Key), RequesterSignature = SignedLeaseTerms.SignRequester(proofTermsBytes, Other),
        };
        var proofAttestation = SignedAttestation.Create(new Attestation
        {
            LeaseId = ExecutionMapping.LeaseId(7), Requester = Other.PeerId.ToBytes(), Provider = peer.ToBytes(),
            ModuleHash = System.Security.Cryptography.SHA256.HashData(proofModule), InputHash = System.Security.Cryptography.SHA256.HashData(proofInput),
            OutputHash = new byte[32], OutputSize = 1, FuelUsed = 10, Outcome = AttestedOutcome.Exited, TimestampUnixMs = 1_900_000_000_000,
        }, Key);
        var signedProof = FraudProof.Create(proofTerms, proofAttestation.EnvelopeBytes, proofModule, proofInput, proofSecret).Encode();
        var brokenReveal = FraudProof.Create(proofTerms, proofAttestation.EnvelopeBytes, proofModule, proofInput, new byte[LeaseAudit.SecretLength]).Encode();
        yield return new("fraud proof (MessagePack)", [proof, signedProof, brokenReveal], b =>
        {
            if (!FraudProof.TryDecode(b, fraudOptions, out var p))
            {
                return false;
            }
            return p.Inspect(fraudOptions).Status != FraudProofStatus.Invalid;
        });

        // The accounting chain: half-blocks, the proposal and answer of /potluck/chain/1.0.0, gossiped pairs and fork proofs.
        var chain = new Potluck.Scheduler.Accounting.ChainOptions();
        var payee = PrivateKey.FromRandom(new Random(2));
        Potluck.Scheduler.Accounting.SignedBlock Block(ulong lease) => Potluck.Scheduler.Accounting.SignedBlock.Sign(new Potluck.Scheduler.Accounting.ChainBlock
        {
            Author = Key.PeerId.ToBytes(),
            Seq = 1,
            Previous = Potluck.Scheduler.Accounting.SignedBlock.Genesis,
            Counterparty = payee.PeerId.ToBytes(),
            ReceiptId = Receipt.ComputeId(BitConverter.GetBytes(lease), payee.PeerId, Key.PeerId),
            LeaseId = BitConverter.GetBytes(lease),
            Amount = 25,
            FuelUsed = 2_500_000,
        }, Key);
        var (blockA, blockB) = (Block(1), Block(2));
        Potluck.Scheduler.Accounting.ForkProof.From(blockA, blockB, out var fork);
        yield return new("chain half-block (MessagePack)", [blockA.EnvelopeBytes, blockB.EnvelopeBytes],
            b => Potluck.Scheduler.Accounting.SignedBlock.Decode(b, chain, out _) == Potluck.Scheduler.Accounting.BlockStatus.Valid);
        var pairBytes = Potluck.Scheduler.Accounting.ChainProtocol.MaxPairBytes(chain);
        yield return new("chain proposal (MessagePack)",
            [Potluck.Scheduler.Accounting.ChainCodec.Encode(new Potluck.Scheduler.Accounting.ChainProposal { Proposal = blockA.EnvelopeBytes })],
            b => Potluck.Scheduler.Accounting.ChainCodec.TryDecode(b, pairBytes, out Potluck.Scheduler.Accounting.ChainProposal? _));
        yield return new("chain answer (MessagePack)",
            [Potluck.Scheduler.Accounting.ChainCodec.Encode(new Potluck.Scheduler.Accounting.ChainAnswer { Agreement = blockB.EnvelopeBytes, Detail = "ok" })],
            b => Potluck.Scheduler.Accounting.ChainCodec.TryDecode(b, pairBytes, out Potluck.Scheduler.Accounting.ChainAnswer? _));
        yield return new("fork proof (MessagePack)", [fork!.Encoded],
            b => Potluck.Scheduler.Accounting.ForkProof.Check(b, chain, out _) == Potluck.Scheduler.Accounting.BlockStatus.Valid);

        // Chain recovery (/potluck/chain/query/1.0.0): the query a counterparty serves, and the answer the recovering node checks
        // (every block the asker's, signed, in order, linked). Seeds: an honest two-block answer with links, and an empty one.
        yield return new("chain recovery query (MessagePack)",
            [Potluck.Scheduler.Accounting.ChainCodec.Encode(new Potluck.Scheduler.Accounting.ChainQuery { AfterSeq = 7, Max = 128 })],
            b => Potluck.Scheduler.Accounting.ChainCodec.TryDecode(b, Potluck.Scheduler.Accounting.ChainQueryProtocol.MaxQueryBytes, out Potluck.Scheduler.Accounting.ChainQuery? _));
        var next = Potluck.Scheduler.Accounting.SignedBlock.Sign(new Potluck.Scheduler.Accounting.ChainBlock
        {
            Author = Key.PeerId.ToBytes(),
            Seq = 2,
            Previous = blockA.Hash,
            Counterparty = payee.PeerId.ToBytes(),
            ReceiptId = Receipt.ComputeId(BitConverter.GetBytes(3UL), payee.PeerId, Key.PeerId),
            LeaseId = BitConverter.GetBytes(3UL),
            Amount = 25,
            FuelUsed = 2_500_000,
        }, Key);
        var agreement = Potluck.Scheduler.Accounting.SignedBlock.Sign(new Potluck.Scheduler.Accounting.ChainBlock
        {
            Author = payee.PeerId.ToBytes(),
            Seq = 1,
            Previous = Potluck.Scheduler.Accounting.SignedBlock.Genesis,
            Counterparty = Key.PeerId.ToBytes(),
            LinkSeq = 1,
            LinkHash = blockA.Hash,
            Kind = Potluck.Scheduler.Accounting.BlockKind.Agreement,
            ReceiptId = blockA.Block.ReceiptId,
            LeaseId = blockA.Block.LeaseId,
            Amount = 25,
            FuelUsed = 2_500_000,
        }, payee);
        yield return new("chain recovery answer (MessagePack + checks)",
            [
                Potluck.Scheduler.Accounting.ChainCodec.Encode(new Potluck.Scheduler.Accounting.ChainQueryAnswer
                {
                    Blocks = [blockA.EnvelopeBytes, next.EnvelopeBytes], Links = [agreement.EnvelopeBytes, []], More = true,
                }),
                Potluck.Scheduler.Accounting.ChainCodec.Encode(new Potluck.Scheduler.Accounting.ChainQueryAnswer()),
            ],
            b => Potluck.Scheduler.Accounting.ChainRecovery.CheckAnswer(Key.PeerId, payee.PeerId, 0, 16, b, chain, out _, out _)
                == Potluck.Scheduler.Accounting.RecoveryStatus.Valid);

        // History checks (/potluck/chain/history/1.0.0): the query a requester serves, and the answer a provider checks.
        yield return new("chain history query (MessagePack)",
            [Potluck.Scheduler.Accounting.ChainCodec.Encode(new Potluck.Scheduler.Accounting.ChainHistoryQuery { Seqs = [1, 5, 9] }),
             Potluck.Scheduler.Accounting.ChainCodec.Encode(new Potluck.Scheduler.Accounting.ChainHistoryQuery())],
            b => Potluck.Scheduler.Accounting.ChainCodec.TryDecode(b, Potluck.Scheduler.Accounting.ChainHistoryProtocol.MaxQueryBytes, out Potluck.Scheduler.Accounting.ChainHistoryQuery? _));
        yield return new("chain history answer (MessagePack + checks)",
            [
                Potluck.Scheduler.Accounting.ChainCodec.Encode(new Potluck.Scheduler.Accounting.ChainQueryAnswer
                {
                    Blocks = [blockA.EnvelopeBytes, next.EnvelopeBytes], Links = [agreement.EnvelopeBytes, []],
                }),
            ],
            b => Potluck.Scheduler.Accounting.ChainHistoryCheck.Verify(Key.PeerId, [1UL, 2UL], b, chain, _ => null, out _, out _)
                == Potluck.Scheduler.Accounting.HistoryStatus.Valid);

        yield return new("task payload (MessagePack)", [new TaskPayload(["a", "b"], new byte[] { 1, 2, 3 }).Encode(), new TaskPayload([], default).Encode()],
            b => TaskPayload.TryDecode(b, out _));
    }

    private static byte[] Framed(string text) => [.. Varint.Encode((ulong)Encoding.UTF8.GetByteCount(text)), .. Encoding.UTF8.GetBytes(text)];

    private static byte[] Yamux(byte type, ushort flags, uint stream, uint length)
    {
        var b = new byte[12];
        b[1] = type;
        b[2] = (byte)(flags >> 8);
        b[3] = (byte)flags;
        System.Buffers.Binary.BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(4), stream);
        System.Buffers.Binary.BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(8), length);
        return b;
    }
}
