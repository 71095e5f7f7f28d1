// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title ProsumLedger: a permissioned two-asset ledger for the prosum electricity market.
/// @notice Two assets live here: `energy` (unit 1 Wh = 0.001 kWh) and `ecoin` (unit 1).
/// Only operators send transactions; participants are addresses with permission flags.
/// Every command carries a `commandId` and runs at most once: a command id already
/// executed makes the call a successful no-op that emits `CommandReplayed` with the block of
/// the first execution. A replay does not revert so that a client retrying after an unknown
/// outcome gets a confirmation, then looks the original transaction up with `commandBlock`
/// and the logs indexed by command id. A command that reverts leaves no trace, so it may be
/// retried. Every event that a command emits has the command id as its first indexed topic.
contract ProsumLedger {
    // Permission flags (a bitmask), matching prosum's Permission enum.
    uint8 public constant CONNECT = 1;
    uint8 public constant SEND = 2;
    uint8 public constant RECEIVE = 4;
    uint8 public constant ISSUE_ENERGY = 8;
    uint8 internal constant PERMISSION_MASK = CONNECT | SEND | RECEIVE | ISSUE_ENERGY;
    // Set on the first grant and never cleared: tells "revoked everything" from "never seen".
    uint8 internal constant REGISTERED = 128;

    uint8 public constant ENERGY = 0;
    uint8 public constant ECOIN = 1;

    struct Trade {
        bytes32 tradeId;
        address seller;
        address buyer;
        uint256 energyWh;
        uint256 ecoin;
        uint256 feeEcoin;
    }

    // One storage slot per account, so a trade reads and writes two slots, not four.
    struct Account {
        uint128 energyWh;
        uint120 ecoin;
        uint8 flags;
    }

    // Both supplies share a slot for the same reason.
    struct Supply {
        uint128 energyWh;
        uint128 ecoin;
    }

    mapping(address => bool) public isOperator;
    mapping(address => Account) internal accounts;
    Supply internal supply;
    /// @notice Block in which a command id was executed (0: never).
    mapping(bytes32 => uint256) public commandBlock;
    /// @notice Block in which a trade id was settled (0: never).
    mapping(bytes32 => uint256) public settledIn;
    /// @notice Block in which a root was first anchored (0: never).
    mapping(bytes32 => uint256) public anchoredIn;

    event AssetDefined(uint8 indexed asset, string name, uint8 decimals);
    event OperatorAdded(address indexed operator, address indexed by);
    event CommandReplayed(bytes32 indexed commandId, uint256 executedInBlock);
    event Granted(bytes32 indexed commandId, address indexed account, uint8 added, uint8 permissions);
    event Revoked(bytes32 indexed commandId, address indexed account, uint8 removed, uint8 permissions);
    event Minted(
        bytes32 indexed commandId, uint8 indexed asset, address indexed to, uint256 amount, bytes32 evidenceHash
    );
    event Burned(bytes32 indexed commandId, uint8 indexed asset, address indexed from, uint256 amount);
    event Settled(
        bytes32 indexed commandId,
        bytes32 indexed tradeId,
        address indexed seller,
        address buyer,
        uint256 energyWh,
        uint256 ecoin,
        uint256 feeEcoin
    );
    event TradeAlreadySettled(bytes32 indexed commandId, bytes32 indexed tradeId, uint256 settledInBlock);
    event BatchSettled(
        bytes32 indexed commandId, uint256 settled, uint256 skipped, address feeAccount, uint256 feeEcoin
    );
    event Anchored(bytes32 indexed commandId, bytes32 indexed root, uint256 anchoredInBlock, string dataRef);

    // `ref` is the trade id when a trade is at fault, otherwise the command id.
    error NotOperator(address caller);
    error InvalidCommand(bytes32 commandId);
    error InvalidAmount(bytes32 ref);
    error InvalidTrade(bytes32 tradeId);
    error AmountOverflow(bytes32 ref);
    error UnknownParticipant(bytes32 ref, address account);
    error PermissionDenied(bytes32 ref, address account, uint8 permission);
    error InsufficientEnergy(bytes32 tradeId, address seller, uint256 available, uint256 needed);
    error InsufficientEcoin(bytes32 ref, address account, uint256 available, uint256 needed);

    constructor() {
        isOperator[msg.sender] = true;
        emit OperatorAdded(msg.sender, msg.sender);
        emit AssetDefined(ENERGY, "energy", 3);
        emit AssetDefined(ECOIN, "ecoin", 0);
    }

    modifier onlyOperator() {
        if (!isOperator[msg.sender]) revert NotOperator(msg.sender);
        _;
    }

    /// @dev True when the command already ran (and says so in a log); otherwise marks it run.
    /// Marking first is safe: a revert later in the command undoes the mark too.
    function _replayed(bytes32 commandId) internal returns (bool) {
        if (commandId == bytes32(0)) revert InvalidCommand(commandId);
        uint256 executed = commandBlock[commandId];
        if (executed != 0) {
            emit CommandReplayed(commandId, executed);
            return true;
        }
        commandBlock[commandId] = block.number;
        return false;
    }

    function _require(bytes32 ref, address account, uint8 flags, uint8 needed) internal pure {
        if (flags & REGISTERED == 0) revert UnknownParticipant(ref, account);
        if (flags & needed != needed) {
            // Name the first missing flag, so the error says exactly which right is absent.
            uint8 missing = needed & ~flags;
            revert PermissionDenied(ref, account, missing & (~missing + 1));
        }
    }

    function addOperator(address operator) external onlyOperator {
        if (!isOperator[operator]) {
            isOperator[operator] = true;
            emit OperatorAdded(operator, msg.sender);
        }
    }

    function grant(bytes32 commandId, address account, uint8 permissions) external onlyOperator {
        if (_replayed(commandId)) return;
        if (account == address(0) || permissions & ~PERMISSION_MASK != 0) revert InvalidCommand(commandId);
        Account storage a = accounts[account];
        uint8 flags = a.flags | permissions | REGISTERED;
        a.flags = flags;
        emit Granted(commandId, account, permissions, flags & PERMISSION_MASK);
    }

    function revoke(bytes32 commandId, address account, uint8 permissions) external onlyOperator {
        if (_replayed(commandId)) return;
        if (permissions & ~PERMISSION_MASK != 0) revert InvalidCommand(commandId);
        Account storage a = accounts[account];
        if (a.flags & REGISTERED == 0) revert UnknownParticipant(commandId, account);
        uint8 flags = a.flags & ~permissions;
        a.flags = flags;
        emit Revoked(commandId, account, permissions, flags & PERMISSION_MASK);
    }

    function mintEnergy(bytes32 commandId, address to, uint256 wh, bytes32 evidenceHash) external onlyOperator {
        if (_replayed(commandId)) return;
        if (wh == 0) revert InvalidAmount(commandId);
        Account memory a = accounts[to];
        _require(commandId, to, a.flags, RECEIVE | ISSUE_ENERGY);
        uint256 balance = uint256(a.energyWh) + wh;
        uint256 total = uint256(supply.energyWh) + wh;
        if (total > type(uint128).max) revert AmountOverflow(commandId);
        // balance <= total, so it fits too.
        accounts[to].energyWh = uint128(balance);
        supply.energyWh = uint128(total);
        emit Minted(commandId, ENERGY, to, wh, evidenceHash);
    }

    function mintEcoin(bytes32 commandId, address to, uint256 amount) external onlyOperator {
        if (_replayed(commandId)) return;
        if (amount == 0) revert InvalidAmount(commandId);
        Account memory a = accounts[to];
        _require(commandId, to, a.flags, RECEIVE);
        uint256 balance = uint256(a.ecoin) + amount;
        uint256 total = uint256(supply.ecoin) + amount;
        // Balances are uint120, so the supply is capped there: every balance then fits.
        if (total > type(uint120).max) revert AmountOverflow(commandId);
        accounts[to].ecoin = uint120(balance);
        supply.ecoin = uint128(total);
        emit Minted(commandId, ECOIN, to, amount, bytes32(0));
    }

    /// @notice Payout: needs no permission, so a participant whose rights were revoked can
    /// still be paid out what it holds.
    function burnEcoin(bytes32 commandId, address from, uint256 amount) external onlyOperator {
        if (_replayed(commandId)) return;
        if (amount == 0) revert InvalidAmount(commandId);
        Account memory a = accounts[from];
        if (a.flags & REGISTERED == 0) revert UnknownParticipant(commandId, from);
        if (a.ecoin < amount) revert InsufficientEcoin(commandId, from, a.ecoin, amount);
        accounts[from].ecoin = uint120(a.ecoin - amount);
        supply.ecoin -= uint128(amount);
        emit Burned(commandId, ECOIN, from, amount);
    }

    /// @notice Settles every trade or none. A trade id settled before (in an earlier batch or
    /// earlier in this one) is skipped with `TradeAlreadySettled`; the first trade that cannot
    /// settle reverts the whole batch with an error naming it. Trades apply in order, so a
    /// later trade sees the balances left by the earlier ones.
    /// Seller needs SEND (and RECEIVE when paid), buyer RECEIVE (and SEND when paying), the fee
    /// account RECEIVE when any fee is due.
    function settleBatch(bytes32 commandId, Trade[] calldata trades, address feeAccount) external onlyOperator {
        if (_replayed(commandId)) return;
        uint256 feeTotal;
        uint256 skipped;
        uint256 n = trades.length;
        for (uint256 i = 0; i < n; ++i) {
            Trade calldata t = trades[i];
            bytes32 id = t.tradeId;
            uint256 earlier = settledIn[id];
            if (earlier != 0) {
                emit TradeAlreadySettled(commandId, id, earlier);
                ++skipped;
                continue;
            }
            address sellerAddr = t.seller;
            address buyerAddr = t.buyer;
            uint256 wh = t.energyWh;
            uint256 price = t.ecoin;
            uint256 fee = t.feeEcoin;
            if (id == bytes32(0) || wh == 0 || sellerAddr == buyerAddr) revert InvalidTrade(id);
            settledIn[id] = block.number;

            Account memory s = accounts[sellerAddr];
            Account memory b = accounts[buyerAddr];
            _require(id, sellerAddr, s.flags, price == 0 ? SEND : SEND | RECEIVE);
            uint256 cost = price + fee;
            _require(id, buyerAddr, b.flags, cost == 0 ? RECEIVE : RECEIVE | SEND);
            if (s.energyWh < wh) revert InsufficientEnergy(id, sellerAddr, s.energyWh, wh);
            if (b.ecoin < cost) revert InsufficientEcoin(id, buyerAddr, b.ecoin, cost);
            // No overflow is possible below: every amount moved is bounded by a balance that
            // fits its type, and totals are bounded by the supply.
            unchecked {
                s.energyWh -= uint128(wh);
                s.ecoin += uint120(price);
                b.energyWh += uint128(wh);
                b.ecoin -= uint120(cost);
                feeTotal += fee;
            }
            accounts[sellerAddr] = s;
            accounts[buyerAddr] = b;
            emit Settled(commandId, id, sellerAddr, buyerAddr, wh, price, fee);
        }
        if (feeTotal != 0) {
            // Read the fee account only now: it may have traded in this batch itself.
            Account storage f = accounts[feeAccount];
            _require(commandId, feeAccount, f.flags, RECEIVE);
            unchecked {
                f.ecoin += uint120(feeTotal);
            }
        }
        emit BatchSettled(commandId, n - skipped, skipped, feeAccount, feeTotal);
    }

    /// @notice Records a data root (a meter-reading batch's Merkle root). Anchoring a root again
    /// keeps its first block; the event then names that block.
    function anchor(bytes32 commandId, bytes32 root, string calldata dataRef) external onlyOperator {
        if (_replayed(commandId)) return;
        if (root == bytes32(0)) revert InvalidCommand(commandId);
        uint256 first = anchoredIn[root];
        if (first == 0) {
            first = block.number;
            anchoredIn[root] = first;
        }
        emit Anchored(commandId, root, first, dataRef);
    }

    function balanceOf(address account) external view returns (uint256 energyWh, uint256 ecoin) {
        Account memory a = accounts[account];
        return (a.energyWh, a.ecoin);
    }

    /// @return registered whether the account was ever granted anything; permissions its flags.
    function permissionsOf(address account) external view returns (bool registered, uint8 permissions) {
        uint8 flags = accounts[account].flags;
        return (flags & REGISTERED != 0, flags & PERMISSION_MASK);
    }

    function totalSupply() external view returns (uint256 energyWh, uint256 ecoin) {
        return (supply.energyWh, supply.ecoin);
    }
}
